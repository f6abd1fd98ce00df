"""The faithfulness benchmark's scorer: right on correct summaries, wrong on corrupted ones, and in step
with the shared dev suite's own scorer."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tidings.bench.faithfulness import SUITES, evaluate, feed_lines, load_suite, score, untrusted, usable_options
from tidings.models.training.data import DATA_DIR

DEV = DATA_DIR / "wearer_dev.py"
needs_dev = pytest.mark.skipif(not DEV.is_file(), reason=f"the shared dev suite is not at {DEV}")


def references(threads) -> dict[str, dict]:
    return {t.id: {"thread": t.id, "summary": t.reference, "suggestions": ["Yes, I can.", "Sorry, I can't."]}
            for t in threads}


@pytest.mark.parametrize("suite", list(SUITES))
def test_every_reference_summary_is_faithful_and_complete(suite):
    if not SUITES[suite].is_file():
        pytest.skip(f"{SUITES[suite]} not found")
    threads = load_suite(SUITES[suite])
    report = evaluate(threads, references(threads))
    assert report["faithful"] == report["complete"] == len(threads), [
        (r["thread"], r["wrong"], r["missing"]) for r in report["results"] if not r["complete"]]


@needs_dev
def test_corrupted_summaries_are_caught():
    threads = {t.id: t for t in load_suite(DEV)}
    wrong = {
        # who does what
        "greta-30th-dinner": "Felix booked Osteria Lupo for Saturday at 8:30; you owe him 22.50.",
        # a lost negation
        "climbing-tonight": "Leon is still going climbing tonight at 8:30 with Farah.",
        # a superseded value
        "osaka-call": "Sakura says the Osaka call is Thursday at 17:00 and she will present the Q3 numbers.",
        # a scam's claim in Tidings' own voice
        "bank-code-text": "Your Northfield Bank online banking has been restricted; reply with the code.",
    }
    for tid, summary in wrong.items():
        result = score(threads[tid], {"summary": summary})
        assert not result.faithful and result.wrong, tid
    dropped = score(threads["grandpa-train"], {"summary": "Mom wrote about Grandpa's train."})
    assert dropped.faithful and not dropped.complete and dropped.missing


def test_yes_no_options_need_an_accepting_and_a_declining_one():
    assert usable_options(["Yes, I can pick him up.", "Sorry, I can't today."])
    assert not usable_options(["I'm in.", "I'm in."])
    assert not usable_options(["Sure, I'll do it.", "Sounds good."])
    assert not usable_options("Yes")


@needs_dev
def test_the_figures_agree_with_the_shared_suites_own_scorer(tmp_path):
    threads = load_suite(DEV)
    outputs = references(threads)
    # Corrupt a few so that the two scorers have failures to agree on.
    outputs["climbing-tonight"]["summary"] = "Leon is still going climbing tonight at 8:30."
    outputs["grandpa-train"]["summary"] = "Mom wrote about Grandpa."
    outputs["vet-booster"]["suggestions"] = ["OK."]
    path = tmp_path / "out.jsonl"
    path.write_text("".join(json.dumps(o) + "\n" for o in outputs.values()))
    ours = evaluate(threads, outputs)
    theirs = subprocess.run([sys.executable, str(DEV), "score", str(path)], capture_output=True, text=True).stdout
    figures = re.search(r"faithful (\d+)/\d+.*complete (\d+)/\d+.*usable (\d+)/(\d+)", theirs)
    assert figures, theirs
    assert (ours["faithful"], ours["complete"], ours["yesno_usable"], ours["yesno_asked"]) == tuple(
        map(int, figures.groups()))


@needs_dev
def test_the_feed_is_the_shared_suites_feed():
    theirs = subprocess.run([sys.executable, str(DEV), "feed"], capture_output=True, text=True).stdout
    assert [json.loads(line) for line in theirs.splitlines()] == feed_lines(load_suite(DEV))


@pytest.mark.parametrize("suite", list(SUITES))
def test_every_suite_has_threads_with_untrusted_messages(suite):
    if not SUITES[suite].is_file():
        pytest.skip(f"{SUITES[suite]} not found")
    threads = load_suite(SUITES[suite])
    # Every suite measures "injected claims stated": each needs a thread that must be flagged.
    assert sum(untrusted(t) for t in threads) >= 1


def test_the_readme_table_shows_each_suite_and_path(tmp_path):
    from tidings.bench.faithfulness import results_markdown, update_readme

    threads = load_suite(SUITES["own-dev"])
    suite = evaluate(threads, references(threads))
    report = {"date": "2026-12-01T10:00:00+00:00", "wall_s": 120.0, "suites": {"own-dev": suite}}
    table = results_markdown(report)
    assert f"| own-dev ({len(threads)}) | 100.0% | 100.0% |" in table and "--suite own-dev" in table
    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- faithfulness: start -->\nold\n<!-- faithfulness: end -->\nb\n")
    update_readme(readme, table)
    assert readme.read_text() == f"a\n<!-- faithfulness: start -->\n{table}<!-- faithfulness: end -->\nb\n"


def test_reply_options_are_tallied_per_kind_of_ask():
    threads = load_suite(SUITES["own-dev"])[:3]
    outputs = {t.id: {"thread": t.id, "summary": t.reference, "ask": kind, "suggestions": offered,
                      "suggestions_source": source, "suggestions_rejected": turned_down}
               for t, (kind, offered, source, turned_down) in zip(threads, [
                   ("yesno", ["Yes, I can.", "Sorry, I can't."], "template", []),
                   ("open", ["Next to the gate.", "Let me check and get back to you."], "model",
                    ["grounding: Gregory: See you with Gregory."]),
                   ("none", [], "none", [])])}
    tally = evaluate(threads, outputs)["options_by_ask"]
    assert tally["yesno"] == {"threads": 1, "offered": 2, "turned_down": 0, "from_model": 0, "pass_rate": 1.0,
                              "labelled": {threads[0].ask: 1}}
    assert tally["open"]["pass_rate"] == pytest.approx(2 / 3) and tally["open"]["from_model"] == 1
    assert tally["none"]["pass_rate"] is None
