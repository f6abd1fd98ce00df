"""The personalization bench: virtual wearers built right, and one real device trained and measured."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tidings.bench.personalization_bench import HABITS, chats, paired, run, virtual_wearers


def test_each_wearer_writes_every_message_of_theirs_with_their_habit_and_under_their_name():
    wearers = virtual_wearers(devices=4, replies=10, half="tune")
    assert [w.habit for w in wearers] == list(HABITS)
    for wearer in wearers:
        assert (len(wearer.train), len(wearer.held_out)) == (8, 2)
        for reply in wearer.train + wearer.held_out:
            theirs = [m.text for m in reply.messages if m.sender == wearer.name] + [reply.reply]
            for text in theirs:
                if wearer.habit == "lowercase":
                    assert text == text.lower() and not re.search(r"\.(\s|$)", text)
                elif wearer.habit == "kiss":
                    assert text.endswith(" x")
                elif wearer.habit == "greets":
                    assert text.startswith(("Hey ", "Hey!"))
                else:
                    assert text[-1] in "!?" and not re.search(r"\.(\s|$)", text)
            assert len(reply.reply.split()) <= 15 + 2  # a suggestion's length, plus the habit's words
    ids = [r.id.split("@")[0] for w in wearers for r in w.train + w.held_out]
    assert len(ids) == len(set(ids))  # no chat is on two devices, nor twice on one


def test_the_tuning_and_reporting_halves_share_no_chat():
    tune, report = {d.id for d in chats("tune")}, {d.id for d in chats("report")}
    assert tune and report and not tune & report


def test_the_paired_differences_are_per_reply_and_weighted_by_tokens():
    rows = [{"task_nll": 20.0, "personal_nll": 10.0, "tokens": 10, **{f"{a}_{m}": v for a in ("task", "personal")
             for m, v in (("top_exact", a == "personal"), ("any_exact", False), ("top_close", False),
                          ("any_close", False), ("top_rouge_l", 0.5))}},
            {"task_nll": 6.0, "personal_nll": 6.0, "tokens": 30, **{f"{a}_{m}": False for a in ("task", "personal")
             for m in ("top_exact", "any_exact", "top_close", "any_close")}, "task_top_rouge_l": 0.0,
             "personal_top_rouge_l": 0.2}]
    diff = paired(rows)
    assert diff["nll_per_token"]["difference"] == pytest.approx((16 - 26) / 40)
    assert diff["top_exact"]["difference"] == pytest.approx(0.5)
    assert diff["top_rouge_l"]["difference"] == pytest.approx(0.1)
    low, high = diff["nll_per_token"]["ci95"]
    assert low <= diff["nll_per_token"]["difference"] <= high


@pytest.mark.model
def test_one_real_wearer_is_trained_measured_and_a_stopped_run_resumes(tmp_path: Path):
    report = run(devices=1, replies=6, out=tmp_path, half="tune", summary_dialogues=1, summary_threads=1)
    [device] = report["per_device"]
    assert device["trained_on"] == 5 and device["steps"] >= 1
    assert report["held_out_replies"] == 1
    rows = [json.loads(line) for line in (tmp_path / "personalization.jsonl").read_text().splitlines()]
    assert rows[0]["tokens"] > 0 and rows[0]["task_nll"] > 0 and rows[0]["personal_nll"] > 0
    assert rows[0]["task_drafts"] and rows[0]["personal_drafts"]
    assert report["summaries"]["task"]["dialogues"] == 1
    assert (tmp_path / "personalization.png").stat().st_size > 0

    again = run(devices=1, replies=6, out=tmp_path, half="tune", summary_dialogues=1, summary_threads=1)
    assert again["per_device"] == report["per_device"]  # read back from the partial file, not retrained
    with pytest.raises(SystemExit, match="other settings"):
        run(devices=1, replies=7, out=tmp_path, half="tune", summary_dialogues=1, summary_threads=1)
