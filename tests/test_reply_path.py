"""From dictation to outbox: composing the reply, and the send_reply tool's checks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tidings.device.messages import parse_lines
from tidings.device.store import Store
from tidings.device.tools import ToolCall, ToolError, send_reply, validate
from tidings.bench.dictations import DICTATIONS
from tidings.device.voice.compose import (
    ReplyComposer, clean_dictation, dictated_reply, direct_reply, needs_tidying, rewrite_problem,
)

FEED = ['{"id": "m1", "thread": "family", "sender": "Mom", "text": "Pick up Lily at 5:30?", '
        '"sent_at": "2026-11-20T15:02:00+01:00"}']


@pytest.fixture
def store(tmp_path: Path):
    with Store(tmp_path / "store.db") as store:
        store.add(parse_lines(FEED), "test")
        yield store


# -- the tool -------------------------------------------------------------------


def test_send_reply_queues_exactly_the_confirmed_draft_once(store: Store):
    draft = store.add_draft("family", "I'll be there at six.")
    entry = send_reply(store, ToolCall("send_reply", {"thread": "family", "text": draft.text}, draft.id))
    assert (entry.thread, entry.text) == ("family", "I'll be there at six.")
    with pytest.raises(ToolError, match="not the open draft"):
        send_reply(store, ToolCall("send_reply", {"thread": "family", "text": draft.text}, draft.id))
    assert len(store.outbox()) == 1


@pytest.mark.parametrize("arguments, error", [
    ({"thread": "family"}, "'text' is a required property"),
    ({"thread": "family", "text": ""}, "should be non-empty|is too short"),
    ({"thread": "family", "text": "   "}, "does not match"),
    ({"thread": "family", "text": "x" * 2001}, "is too long"),
    ({"thread": "family", "text": "hi", "to": "everyone"}, "Additional properties"),
    ({"thread": 3, "text": "hi"}, "is not of type 'string'"),
])
def test_calls_that_break_the_schema_are_refused(store: Store, arguments, error):
    draft = store.add_draft("family", "hi")
    with pytest.raises(ToolError, match=error):
        send_reply(store, ToolCall("send_reply", arguments, draft.id))
    assert store.outbox() == []


def test_a_call_must_match_the_draft_the_wearer_heard(store: Store):
    draft = store.add_draft("family", "Yes, at six.")
    with pytest.raises(ToolError, match="not the open draft"):
        send_reply(store, ToolCall("send_reply", {"thread": "family", "text": "Yes to everyone."}, draft.id))
    with pytest.raises(ToolError, match="no thread"):
        send_reply(store, ToolCall("send_reply", {"thread": "everyone", "text": "Yes, at six."}, draft.id))
    with pytest.raises(ToolError, match="unknown tool"):
        validate(ToolCall("delete_thread", {}, draft.id))
    assert store.outbox() == [] and store.draft(draft.id).status == "open"


# -- composing ------------------------------------------------------------------


@pytest.mark.parametrize("dictation, clean", [
    ("um tell her I'll be there at six", "Tell her I'll be there at six."),
    ("Uh, yes, uh, that works.", "Yes, that works."),
    ("sounds good!", "Sounds good!"),
    ("  erm  ", ""),
])
def test_dictation_is_cleaned_of_filler(dictation, clean):
    assert clean_dictation(dictation) == clean


@pytest.mark.parametrize("rewrite, problem", [
    ("I'll be there at six.", ""),
    ("I'll be there at seven.", "seven"),
    ("I'll be there at six with Tom.", "adds Tom"),
    ("Okay.", "drops words"),
    ("I'll be there at six. I'm coming.", "adds words the wearer did not say: coming"),
    ("Tell her I will definitely absolutely certainly be there at six o'clock tonight for sure, promise, really.",
     "longer than"),
    ("Dictated: tell her", "echoes"),
])
def test_a_rewrite_may_not_add_facts_or_drop_meaning(rewrite, problem):
    result = rewrite_problem(rewrite, "Tell her I'll be there at six.")
    assert (problem in result) if problem else result == ""


@pytest.mark.parametrize("dictation, tidy", [
    ("Tell her I'll be there at six.", False), ("Can we move it to Friday?", False),
    ("um tell her I'll be there at six", True), ("the the blue one", True), ("at six, no wait, at seven", True),
])
def test_only_a_disfluent_dictation_goes_to_the_model(dictation, tidy):
    assert needs_tidying(dictation) is tidy


def test_a_clean_dictation_is_read_back_without_a_model_call():
    class NoModel:
        def complete(self, *args, **kwargs):
            raise AssertionError("the model was asked to rewrite a clean dictation")

    assert ReplyComposer(NoModel()).compose("Tell her I'll be there at six.").text == "I'll be there at six."


@pytest.mark.model
def test_the_composer_keeps_the_wearers_meaning_on_the_real_model(engine):
    for dictation in ["um tell her I'll be there at six", "yes uh the blue one please", "can we uh move it to Friday",
                      "the the slides are ready"]:
        reply = ReplyComposer(engine).compose(dictation)
        assert reply.source in ("model", "dictation")
        assert rewrite_problem(reply.text, dictated_reply(dictation)) == ""
        if reply.source == "dictation":
            assert reply.text == dictated_reply(dictation)


@pytest.mark.parametrize("dictation, reply", [d[:2] for d in DICTATIONS])
def test_a_dictation_about_the_reply_becomes_the_reply(dictation, reply):
    assert ReplyComposer().compose(dictation).text == reply


def test_the_dictation_set_adds_no_word_but_you():
    """The expected replies themselves: every word was dictated, except "you" for the addressee and the
    verb agreeing with it ("she doesn't" → "you don't", "he wants" → "you want")."""
    agreeing = {"are", "were", "have", "do", "don't", "aren't", "weren't", "haven't"}
    assert len(DICTATIONS) >= 30
    for dictation, reply, _thread in DICTATIONS:
        said = set(re.findall(r"[a-z']+", dictation.lower()))
        said |= {w[:-1] for w in said if w.endswith("s")}
        added = set(re.findall(r"[a-z']+", reply.lower())) - said
        assert all(w.startswith("you") or w in agreeing for w in added), (dictation, added)


def test_an_indirect_dictation_turns_only_the_addressees_pronouns():
    assert direct_reply("tell her I'll pick her up") == "I'll pick you up"
    assert direct_reply("tell him his keys are here") == "Your keys are here"
    assert direct_reply("tell Sam she can come and bring her sister") == "You can come and bring your sister"
    assert direct_reply("tell Sam he and she can come") == "He and she can come"  # whose is whose: left as said
    assert direct_reply("tell me about it") == "tell me about it"
