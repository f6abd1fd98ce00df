"""The `tidings` command as a wearer or engineer meets it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tidings.device.config import Config, ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "device" / "demo_feed.jsonl"


NO_MODEL = '[model]\ntask_adapter = ""\n[wearer]\nname = "Alex"\n'


def tidings(*args: str, tmp_path: Path, stdin: str | None = None, config_text: str = NO_MODEL
            ) -> subprocess.CompletedProcess:
    config = tmp_path / "tidings.toml"
    if not config.exists():
        config.write_text(config_text)
    return subprocess.run([sys.executable, "-m", "tidings.device.cli", "--config", str(config),
                           "--store", str(tmp_path / "store.db"), *args],
                          capture_output=True, text=True, input=stdin, timeout=300)


def test_summarize_json_prints_one_object_per_thread_with_the_required_fields(tmp_path: Path):
    result = tidings("summarize", str(DEMO), "--json", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["thread"] for r in records] == ["book-club", "friday-dinner", "roadmap", "family", "landlord"]
    for record in records:
        assert {"thread", "summary", "source", "urgency", "needs_reply", "suggestions"} <= set(record)
        assert record["source"] == "verbatim"  # every demo thread is about as short as its summary
        assert record["summary"]
    by_thread = {r["thread"]: r for r in records}
    assert by_thread["landlord"]["urgency"] == "high" and by_thread["landlord"]["needs_reply"]
    assert not by_thread["book-club"]["needs_reply"] and by_thread["book-club"]["suggestions"] == []
    assert "no task adapter" in result.stderr
    again = tidings("summarize", str(DEMO), "--json", tmp_path=tmp_path)
    assert again.stdout == "" and "no unread messages" in again.stderr


def test_summarize_reads_stdin_and_reports_bad_lines_without_losing_good_ones(tmp_path: Path):
    feed = DEMO.read_text().splitlines()
    result = tidings("summarize", "-", "--json", tmp_path=tmp_path, stdin="\n".join([feed[0], "{oops", feed[1]]))
    assert result.returncode == 0
    assert "skipped stdin line 2: malformed JSON" in result.stderr
    [record] = [json.loads(line) for line in result.stdout.splitlines()]
    assert record["message_ids"] == ["fam-1", "fam-2"]


def test_the_human_output_says_which_path_made_each_summary(tmp_path: Path):
    result = tidings("summarize", str(DEMO), tmp_path=tmp_path)
    assert result.stdout.count("(summary by: verbatim)") == 5
    assert "[landlord] from Mr. Okafor (urgency high; needs reply)" in result.stdout


def test_a_missing_feed_or_a_bad_config_is_a_clear_error(tmp_path: Path):
    result = tidings("summarize", str(tmp_path / "missing.jsonl"), tmp_path=tmp_path)
    assert result.returncode == 2 and "No such file" in result.stderr and "Traceback" not in result.stderr
    (tmp_path / "tidings.toml").write_text("[engine]\nthreads = 4\n")
    result = tidings("summarize", str(DEMO), tmp_path=tmp_path)
    assert result.returncode == 2 and "unknown key(s) threads in [engine]" in result.stderr


def test_models_lists_and_verifies(tmp_path: Path):
    result = tidings("models", tmp_path=tmp_path)
    assert result.returncode == 0
    assert "gemma3-270m-q4_k_m-lean32k (default)" in result.stdout and "smollm2-135m-instruct-q4_1" in result.stdout
    # two base models, three lean models, the shipped adapter, three speech models, and the optional models
    # this machine has; the others are listed with their install command
    from tidings.models.registry import is_installed, load_manifest

    optional = [spec for spec in load_manifest().values() if spec.optional]
    installed = sum(is_installed(spec) for spec in optional)
    assert result.stdout.count("  ok: ") == 9 + installed
    assert result.stdout.count("not installed (optional") == len(optional) - installed


def test_help_explains_every_command():
    result = subprocess.run([sys.executable, "-m", "tidings.device.cli", "--help"], capture_output=True, text=True)
    for command in ("summarize", "demo", "ingest", "serve", "models"):
        assert command in result.stdout


def test_the_documented_config_file_is_exactly_the_defaults():
    assert load_config(REPO / "tidings.toml") == Config()


def test_config_type_errors_are_named(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[engine]\nn_ctx = "big"\n')
    with pytest.raises(ConfigError, match="engine.n_ctx must be int"):
        load_config(bad)


def test_the_on_device_path_never_imports_torch(tmp_path: Path):
    probe = ("import sys; from tidings.device.cli import main; "
             f"code = main(['--store', {str(tmp_path / 's.db')!r}, 'summarize', {str(DEMO)!r}, '--json']); "
             "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 5


def test_with_the_shipped_adapter_every_spoken_summary_passes_the_validators_and_llama_cpp_stays_quiet(
        tmp_path: Path):
    # No verbatim reading, and the model trusted to draft for the wearer: every demo thread goes to the model,
    # and what is printed must pass every check.
    result = tidings("summarize", str(DEMO), "--json", tmp_path=tmp_path,
                     config_text='[wearer]\nname = "Alex"\n[summarizer]\nverbatim_max_words = 0\n'
                                 'model_drafts_for_wearer = true\n')
    assert result.returncode == 0, result.stderr
    assert "llama_" not in result.stderr and "ggml" not in result.stderr, result.stderr[:2000]
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 5
    assert {r["source"] for r in records} <= {"model", "fallback"}
    from tidings.device.messages import parse_lines
    from tidings.device.summary.validators import validate
    from tidings.device.summary.wearer import Wearer

    messages = [m for m in parse_lines(DEMO.read_text().splitlines())]
    for record in records:
        sources = [m for m in messages if m.thread == record["thread"]]
        if record["source"] == "model":
            assert validate(record["summary"], sources, Wearer("Alex")) is None, record
        else:
            assert record["rejected"], record  # the model's drafts were turned down, and say why


def test_verbose_shows_llama_cpps_own_log(tmp_path: Path):
    feed = "\n".join(DEMO.read_text().splitlines()[:3])
    result = tidings("-v", "summarize", "-", "--json", tmp_path=tmp_path, stdin=feed,
                     config_text='[summarizer]\nverbatim_max_words = 0\nsummary_beams = 1\nretries = 0\n')
    assert result.returncode == 0, result.stderr
    assert "llama_adapter_lora_init_impl" in result.stderr


def test_no_adapter_runs_the_bare_base_model(tmp_path: Path):
    result = tidings("summarize", str(DEMO), "--json", "--no-adapter", tmp_path=tmp_path,
                     config_text='[wearer]\nname = "Alex"\n[summarizer]\nverbatim_max_words = 0\n'
                                 'model_drafts_for_wearer = true\n')
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 5
    # The base model echoes or rambles: its drafts are turned down and say why.
    assert sum(len(r["rejected"]) for r in records) >= 3


def test_listen_names_a_missing_microphone_and_how_to_fix_it(tmp_path: Path):
    result = tidings("listen", tmp_path=tmp_path, config_text='[voice]\nmicrophone = "no-such-mic"\n')
    assert result.returncode == 2
    assert "no input device matches 'no-such-mic'" in result.stderr and "fix: set [voice] microphone" in result.stderr
