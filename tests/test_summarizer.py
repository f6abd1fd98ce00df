"""The summary plan on the real engine: verbatim, folding, validation, retry, fallback."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tidings.device.config import SummarizerConfig
from tidings.device.llm.engine import Engine
from tidings.device.summary.grounding import check_grounding
from tidings.device.messages import Message
from tidings.device.summary.summarizer import Summarizer
from tidings.device.summary.wearer import Wearer

pytestmark = pytest.mark.model
T0 = datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc)


def thread(*lines: tuple[str, str]) -> list[Message]:
    return [Message(f"m{i}", "t", sender, text, T0 + timedelta(minutes=i)) for i, (sender, text) in enumerate(lines)]


PICKUP = thread(("Mom", "Can someone pick up Lily at 5:30 today?"), ("Dad", "I can't, my train gets in at 6:15."),
                ("Mom", "Alex, could you do it? She'll wait at the north gate."))


def test_a_long_thread_is_folded_into_pieces_that_fit_and_keep_every_word(engine: Engine):
    long_thread = thread(*[("Ann" if i % 2 else "Ben", f"Point {i}: the delivery of {i} boxes is due at {i % 12 + 1}pm. " * 3)
                           for i in range(40)])
    huge = thread(("Cy", "This sentence is about the budget. " * 400))
    summarizer = Summarizer(SummarizerConfig(context_budget_tokens=200), engine)
    for messages in (long_thread, huge):
        pieces = summarizer.fold(messages)
        assert len(pieces) > 1
        for piece in pieces:
            assert sum(engine.count_tokens(f"{m.sender}: {m.text}\n") for m in piece) <= 200
        assert " ".join(m.text for p in pieces for m in p).split() == " ".join(m.text for m in messages).split()


def test_a_rolling_summary_carries_each_piece_into_the_next_prompt(engine: Engine, monkeypatch):
    prompts = []
    real_complete = engine.complete

    def recording_complete(prompt, **kwargs):
        prompts.append(prompt.text)
        return real_complete(prompt, **kwargs)

    monkeypatch.setattr(engine, "complete", recording_complete)
    messages = thread(*[("Ann", f"Item {i}: please order {i} chairs for the hall before Friday.") for i in range(30)])
    summarizer = Summarizer(SummarizerConfig(context_budget_tokens=120, retries=0, max_summary_tokens=24), engine)
    pieces = summarizer.fold(messages)
    summarizer.model_summaries(messages, temperature=0.0)
    assert len(prompts) == len(pieces) >= 3
    assert "Earlier in the chat" not in prompts[0]
    assert all("Earlier in the chat" in p for p in prompts[1:])
    assert "Item 29" in prompts[-1] and "Item 29" not in prompts[0]


def test_drafts_that_fail_validation_are_retried_then_replaced_by_the_fallback(engine: Engine):
    summarizer = Summarizer(SummarizerConfig(max_summary_words=2, retries=1, verbatim_max_words_no_wearer=0), engine)
    summary = summarizer.summarize("t", PICKUP)
    assert summary.source == "fallback"
    assert len(summary.rejected) >= 2  # every beam hypothesis, then the sampled retry
    assert check_grounding(summary.summary, PICKUP).ok
    assert summary.needs_reply and 2 <= len(summary.suggestions) <= 3


def test_said_to_a_wearer_the_model_drafts_only_when_trusted_to(engine: Engine, monkeypatch):
    """The shipped adapter writes third-person summaries; said to a wearer its accepted drafts were not right."""
    calls = []
    real_complete = engine.complete
    monkeypatch.setattr(engine, "complete", lambda prompt, **kw: calls.append(prompt) or real_complete(prompt, **kw))
    wearer = Wearer("Alex")
    summary = Summarizer(SummarizerConfig(verbatim_max_words=0), engine, wearer).summarize("t", PICKUP)
    assert summary.source == "fallback" and summary.rejected == () and calls == []
    trusted = Summarizer(SummarizerConfig(verbatim_max_words=0, model_drafts_for_wearer=True, retries=0), engine,
                         wearer)
    trusted.summarize("t", PICKUP)
    assert calls and "Alex" in "".join(text for text, _ in calls[0].parts)
    assert Summarizer(SummarizerConfig(verbatim_max_words_no_wearer=0, retries=0), engine).summarize(
        "t", PICKUP).source in ("model", "fallback") and len(calls) > 1


def test_a_summary_made_whole_is_beam_searched_its_hypotheses_checked_in_turn_and_its_retry_sampled(
        engine: Engine, monkeypatch):
    calls = []
    real_complete = engine.complete

    def recording_complete(prompt, **kwargs):
        calls.append((kwargs["temperature"], kwargs["beams"]))
        return real_complete(prompt, **kwargs)

    monkeypatch.setattr(engine, "complete", recording_complete)
    config = SummarizerConfig(max_summary_words=2, retries=1, max_summary_tokens=24, summary_beams=3,
                              verbatim_max_words_no_wearer=0)
    outcome = Summarizer(config, engine).summary_text(PICKUP)
    assert calls == [(0.0, 3), (0.7, 1)]
    # Every distinct finished hypothesis of the beam, best first, then the one sampled draft; all turned down.
    assert 3 <= len(outcome.drafts) <= 4 and len(set(outcome.drafts[:-1])) == len(outcome.drafts) - 1
    assert len(outcome.rejected) == len(outcome.drafts) and all(outcome.drafts)


@pytest.mark.parametrize("draft, problem", [
    ("Mom asks Gregory to pick up Lily at 5:30.", "grounding: not in the messages: Gregory"),
    ("Mom asks Alex to pick up Lily at 7:30.", "grounding: not in the messages: at 7:30"),
    ("Mom asks Alex to pick up 3 kids at 5:30.", "grounding: not in the messages: 3"),
    ("Dad will pick up Lily at 5:30.", "negation: 'Dad will pick up Lily at 5:30.'"),
    ("Mom: Can someone pick up Lily at 5:30 today?", "echoes the prompt"),
    ("Summarize this chat in one or two sentences: who wants what.", "echoes the prompt"),
    ("Lily.", "too short"),
    # How the embedded model loops on a long thread (own-dev-4, parents-40th-lunch): the same sentence again.
    ("Mom asks Alex to pick up Lily at 5:30. Dad's train gets in at 6:15. Mom asks Alex to pick up Lily at 5:30.",
     "repetition: says again what it already said"),
    ("Mom " * 70, "too long"),
])
def test_bad_drafts_are_named_for_what_is_wrong(draft, problem):
    assert problem in Summarizer(SummarizerConfig()).problem_with(draft, PICKUP)


def test_a_faithful_draft_passes():
    draft = "Mom asks Alex to pick up Lily at 5:30 today because Dad's train gets in at 6:15."
    assert Summarizer(SummarizerConfig()).problem_with(draft, PICKUP) is None
    said_to_alex = "Mom asks you to pick up Lily at 5:30 today; Dad can't, and she'll wait at the north gate."
    assert Summarizer(SummarizerConfig(), wearer=Wearer("Alex")).problem_with(said_to_alex, PICKUP) is None


def test_a_thread_as_short_as_a_summary_is_read_verbatim_to_the_wearer():
    summary = Summarizer(SummarizerConfig(), wearer=Wearer("Alex")).summarize("family", PICKUP)
    assert summary.source == "verbatim"
    assert summary.summary == ("Mom: Can someone pick up Lily at 5:30 today? Dad: I can't, my train gets in at 6:15. "
                               "Mom asks you: Could you do it? She'll wait at the north gate.")


def test_without_an_engine_every_summary_is_verbatim_or_fallback_and_says_so():
    summary = Summarizer(SummarizerConfig(verbatim_max_words=0), wearer=Wearer("Alex")).summarize("family", PICKUP)
    assert summary.source == "fallback" and summary.rejected == ()
    assert summary.senders == ("Mom", "Dad")
    assert summary.suggestions_source == "template"
    assert summary.to_json()["message_ids"] == ["m0", "m1", "m2"]


def test_no_sampled_retry_when_every_hypothesis_missed_what_the_wearer_is_asked(monkeypatch):
    """The retry samples the same adapter; on the wearer suites it never said the ask the beam missed."""
    calls = []
    summarizer = Summarizer(SummarizerConfig(verbatim_max_words=0, retries=1, model_drafts_for_wearer=True),
                            engine=object(), wearer=Wearer("Alex"))

    def drafts(messages, temperature):
        calls.append(temperature)
        return ["Dad's train gets in at 6:15 today.", "Lily will wait at the north gate."]

    monkeypatch.setattr(summarizer, "model_summaries", drafts)
    outcome = summarizer.plan(PICKUP)
    assert outcome.source == "fallback" and calls == [0.0]
    assert all(r.startswith("ask:") for r in outcome.rejected) and len(outcome.rejected) == 2
    # A draft turned down for anything else is still worth one sampled retry.
    monkeypatch.setattr(summarizer, "model_summaries", lambda messages, temperature: calls.append(temperature)
                        or ["Gregory asks you to pick up Lily at 5:30."])
    calls.clear()
    summarizer.plan(PICKUP)
    assert calls == [0.0, 0.7]
