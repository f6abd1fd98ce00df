"""Reply options from the ask: its kind, options in the asker's words turned round, and the checks every option passes."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from tidings.device.agent import open_summarizer
from tidings.device.config import Config, WearerConfig
from tidings.device.messages import Message
from tidings.device.summary.replies import DEFER, find_ask, problem_with_option, reply_options
from tidings.device.summary.wearer import Wearer

T0 = datetime(2026, 11, 24, 9, 0, tzinfo=timezone.utc)
TOM = Wearer("Tom")
# The shared dev suite's patterns for a usable yes and no.
YES = re.compile(r"\b(yes|yeah|sure|ok|okay|sounds good|will do|i can|i'll|count me in|i'm in|works|happy to|on it"
                 r"|definitely|of course|great|perfect)\b", re.I)
NO = re.compile(r"\b(no|can't|cannot|won't|not|unable|sorry|pass|busy|decline)\b", re.I)


def thread(*pairs: tuple[str, str]) -> list[Message]:
    return [Message(f"m{i}", "t", sender, text, T0 + timedelta(minutes=i)) for i, (sender, text) in enumerate(pairs)]


@pytest.mark.parametrize("text, kind", [
    ("Are you free on Friday?", "yesno"),
    ("Please send me the address", "yesno"),
    ("she asked if you can grab the baklava on the way", "yesno"),
    ("What time should we meet?", "time"),
    ("When are you back?", "time"),
    ("Where did you park?", "open"),
    ("thai, pizza or sushi tonight?", "choice"),
    ("Would Tuesday 1 Dec at 16:15 or Thursday 3 Dec at 8:00 suit you better?", "choice"),
    ("Are you coming or not?", "yesno"),
    ("The parcel arrived.", "none"),
    ("Get well soon!", "none"),
])
def test_the_kind_of_ask(text, kind):
    assert find_ask(thread(("Priya", text)), TOM).kind == kind


def test_a_yes_no_ask_gets_an_accept_and_a_decline_in_the_askers_words_turned_round():
    options = reply_options(thread(("Priya", "hey, can you send me your notes from Monday?")), TOM, 3).options
    assert options == ("Yes, I can send you my notes from Monday.", "Sorry, I can't send you my notes from Monday.",
                       DEFER)
    borrow = reply_options(thread(("Hamid", "yo can I borrow your cargo bike tomorrow?")), TOM, 3).options
    assert borrow[0] == "Sure, you can borrow my cargo bike tomorrow."
    for opts in (options, borrow):
        assert YES.search(opts[0]) and not NO.search(opts[0]) and NO.search(opts[1])


def test_a_phrase_that_says_you_or_i_is_not_turned_round_by_guesswork():
    """'can you confirm you can do Thursday' would need a parse to turn 'you'; the short form says no more."""
    options = reply_options(thread(("Sara", "Alex, can you confirm you can do Thursday 3 Dec?")), TOM, 3).options
    assert options[:2] == ("Yes, I can.", "Sorry, I can't.")


def test_within_a_message_the_question_outranks_a_trailing_request():
    ask = find_ask(thread(("Vet", "Can you come Tuesday at 9? If yes, please bring her vaccination booklet.")), TOM)
    assert ask.question == "Can you come Tuesday at 9?"


def test_a_choice_gets_one_option_per_alternative():
    options = reply_options(thread(("School", "Would Tuesday 1 Dec at 16:15 or Thursday 3 Dec at 8:00 suit you "
                                              "better?")), TOM, 3).options
    assert options == ("Tuesday 1 Dec at 16:15 works for me.", "Thursday 3 Dec at 8:00 works for me.", DEFER)


def test_nothing_asked_or_already_answered_gets_no_options():
    assert reply_options(thread(("Priya", "The parcel arrived.")), TOM, 3).options == ()
    answered = thread(("Priya", "Can you bring the charger?"), ("Tom", "yes"))
    result = reply_options(answered, TOM, 3)
    assert result.ask.kind == "none" and result.options == () and result.source == "none"


def test_options_add_no_facts_of_their_own():
    messages = thread(("Priya", "Can we move the 3pm review to Friday?"))
    options = reply_options(messages, TOM, 3).options
    assert options[0] == "Sure, let's move the 3pm review to Friday."
    assert all(problem_with_option(o, messages, TOM) is None for o in options)
    longer = reply_options(thread(("Priya", "Can we move the 3pm review with Gregory to Friday?")), TOM, 3).options
    assert longer[0] == "Sure, let's do that."  # too long to repeat in a reply
    for kind_of_ask in ("What time should we meet?", "Where did you park?"):
        for option in reply_options(thread(("Priya", kind_of_ask)), TOM, 3).options:
            assert not re.search(r"\d|Friday|Priya", option)


@pytest.mark.parametrize("option, check", [
    ("See you at 9 with Gregory.", "grounding"),
    ("Tom will be there at 5.", "sendable"),
    ("Priya: sure", "sendable"),
    ("I will definitely absolutely be there and bring all the things you asked me to bring along.", "length"),
    ("I'm at the entrance at 5.", "sendable"),
])
def test_an_option_the_wearer_could_not_send_is_named_for_its_check(option, check):
    messages = thread(("Priya", "Where did you park?"), ("Priya", "I'm at the entrance at 5."))
    problem = problem_with_option(option, messages, TOM)
    assert problem is not None and problem.startswith(check)
    assert problem_with_option("Next to the entrance.", messages, TOM) is None
    assert problem_with_option("Next to the entrance.", messages, TOM, offered=["next to the entrance"]) \
        .startswith("distinct")


def test_model_proposals_answer_only_open_and_time_asks_and_are_checked_like_any_option():
    proposals = ["See you at 9 with Gregory.", "Next to the entrance.", "next to the entrance!", ""]
    calls = []

    def propose():
        calls.append("asked the model")
        return proposals

    open_ask = thread(("Priya", "Where did you park?"))
    result = reply_options(open_ask, TOM, 3, propose)
    assert result.source == "model" and result.options[0] == "Next to the entrance."
    assert [r.split(":")[0] for r in result.turned_down] == ["grounding", "distinct"]
    assert DEFER in result.options  # a place always stays for deferring
    assert reply_options(thread(("Priya", "Can you bring the charger?")), TOM, 3, propose).source == "template"
    assert calls == ["asked the model"]  # for the open question only


@pytest.mark.model
def test_on_the_real_model_every_offered_option_passes_its_checks():
    config = Config()
    config = replace(config, wearer=WearerConfig(name="Tom"))
    summarizer = open_summarizer(config)
    for text in ("Where should we meet for lunch tomorrow?", "What time does your train get in?",
                 "Can you bring the charger to the office?"):
        messages = thread(("Priya", "Morning! Big day today."), ("Priya", text))
        summary = summarizer.summarize("t", messages)
        assert summary.ask == find_ask(messages, TOM).kind
        assert 2 <= len(summary.suggestions) <= 3
        offered: list[str] = []
        for option in summary.suggestions:
            assert problem_with_option(option, messages, TOM, offered) is None
            offered.append(option)
        assert summary.suggestions_source in ("model", "template")


def test_a_question_word_opening_the_last_clause_asks_an_open_question_and_how_about_proposes():
    assert find_ask(thread(("Sara", "Alex, you know her best, what would she like?")), TOM).kind == "open"
    assert find_ask(thread(("Sara", "ok, how about Friday?")), TOM).kind == "yesno"


def test_a_choice_put_to_the_wearer_by_name_or_after_a_colon_lists_only_the_alternatives():
    alex = Wearer("Alex")
    assert find_ask(thread(("Lena", "Alex, Dune 2 or Paddington 3?")), alex).alternatives == ("Dune 2", "Paddington 3")
    tiebreak = find_ask(thread(("Priyanka", "Alex, you're the tiebreaker: Thai Orchid or Bella Napoli?")), alex)
    assert tiebreak.alternatives == ("Thai Orchid", "Bella Napoli")
    assert find_ask(thread(("Kim", "thai, pizza or sushi tonight?")), alex).alternatives == ("thai", "pizza",
                                                                                                "sushi tonight")
