"""The model comparison: each candidate measured in its own process under its own config, kept for resuming,
and put on one table."""

from __future__ import annotations

import json
import subprocess
import sys

from tidings.bench.model_compare import CANDIDATES, candidate_config, table
from tidings.device.agent import open_summarizer
from tidings.device.config import load_config

GEMMA = CANDIDATES["gemma3-270m+tidings-task"]


def test_a_candidate_runs_its_model_trusted_to_draft_for_the_wearer(tmp_path, embedded_model):
    path = tmp_path / "tidings.toml"
    path.write_text(f'[wearer]\nname = "Alex"\n\n{candidate_config(GEMMA)}')
    config = load_config(path)
    assert (config.model.name, config.model.task_adapter) == (GEMMA.model, GEMMA.adapter)
    summarizer = open_summarizer(config)
    assert summarizer.wearer and summarizer.drafts_by_model
    summarizer.engine.close()
    # An instruction-tuned candidate runs with no adapter (loading it here would cost a gigabyte).
    path.write_text(f'[wearer]\nname = "Alex"\n\n{candidate_config(CANDIDATES["qwen2.5-coder-1.5b"])}')
    assert load_config(path).model.task_adapter == ""


def test_the_worker_measures_once_and_resumes_from_what_it_kept(tmp_path, embedded_model):
    out = tmp_path / "models"
    worker = [sys.executable, "-m", "tidings.bench.model_compare", "--worker", GEMMA.name, "--out", str(out),
              "--dialogues", "2", "--suite", "own-dev-2"]
    subprocess.run(worker, check=True, capture_output=True)
    kept = json.loads((out / f"{GEMMA.name}.json").read_text())
    suite = kept["faithfulness"]["suites"]["own-dev-2"]
    assert suite["threads"] == 20 and 0 <= suite["faithful_rate"] <= 1
    # Every thread not read verbatim is the model's or the fallback's, and every model summary was a draft.
    not_verbatim = suite["threads"] - suite["by_source"].get("verbatim", {}).get("threads", 0)
    from_model = suite["by_source"].get("model", {}).get("threads", 0)
    assert suite["model_share_not_verbatim"] == from_model / not_verbatim
    assert suite["drafts"] >= from_model
    assert kept["samsum"]["dialogues"] == 2
    assert kept["agent"]["summary_latency_s"]["n"] > 0 and kept["agent"]["peak_rss_mb"] > 200

    subprocess.run(worker, check=True, capture_output=True)
    assert json.loads((out / f"{GEMMA.name}.json").read_text()) == kept  # nothing measured again


def test_the_table_pools_suites_by_their_threads_and_names_what_is_missing():
    def suite(threads, faithful, complete, verbatim, model, turned_down):
        return {"threads": threads, "faithful_rate": faithful / threads, "complete_rate": complete / threads,
                "by_source": {"verbatim": {"threads": verbatim}, "model": {"threads": model}},
                "drafts": model + turned_down}

    measured = {
        "label": "Model A",
        "faithfulness": {"suites": {"dev": suite(40, 40, 30, 20, 10, 10), "own-dev": suite(10, 5, 5, 0, 0, 10),
                                    "held-out": suite(20, 15, 8, 10, 5, 5)}},
        "agent": {"summary_latency_s": {"p50": 1.0, "p95": 2.5, "n": 16}, "peak_rss_mb": 700.0},
        "samsum": {"rouge_l_heard": 33.0, "rouge_l_drafts": 35.5},
    }
    report = {"date": "2026-12-02T00:00:00+00:00", "suites": ["dev", "own-dev", "held-out"], "dialogues": 100,
              "candidates": {"a": measured, "b": {"label": "Model B", "missing": "pip install b"}}}
    rows = table(report).splitlines()
    cells = [c.strip() for c in next(r for r in rows if r.startswith("| Model A")).strip("|").split("|")]
    assert cells[1:4] == ["100.0% / 75.0%",  # dev alone
                          "90.0% / 70.0%",  # the tuning suites pooled by threads: 45/50, 35/50
                          "75.0% / 40.0%"]  # held out on its own
    assert cells[4] == "37.5%"  # long threads the model speaks: 15 of the 40 not read verbatim
    assert cells[5] == "37.5%"  # drafts accepted: 15 of 40
    assert cells[6:] == ["33.0 / 35.5", "1.00 / 2.50 s", "700 MB"]
    assert any(r.startswith("| Model B | not installed: `pip install b`") for r in rows)
