from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tidings.device.messages import Message
from tidings.device.summary.triage import Triage, triage
from tidings.device.summary.wearer import Wearer

START = datetime(2024, 5, 16, 9, 0, tzinfo=timezone.utc)


def thread(*pairs: tuple[str, str]) -> list[Message]:
    return [Message(str(i), "t", sender, text, START + timedelta(minutes=i))
            for i, (sender, text) in enumerate(pairs)]


def test_urgent_words_make_it_high():
    result = triage(thread(("Priya", "The kitchen pipe is leaking, call me asap")), wearer=Wearer("Tom"))
    assert result.urgency == "high"
    assert result.needs_reply
    assert "mentions 'leaking'" in result.reason and "mentions 'asap'" in result.reason


@pytest.mark.parametrize("text", ["Can you send the deck today?", "Please pick up the kids by 5",
                                  "Could you call the landlord in an hour?"])
def test_same_day_deadline_with_an_ask_is_high(text):
    result = triage(thread(("Priya", text)), wearer=Wearer("Tom"))
    assert result == Triage("high", True, result.reason)
    assert "same-day deadline" in result.reason


def test_same_day_word_without_an_ask_is_not_urgent():
    assert triage(thread(("Priya", "had a lovely walk today")), wearer=Wearer("Tom")).urgency == "low"


def test_now_is_urgent_only_when_something_is_asked():
    assert triage(thread(("Priya", "Call me now please")), wearer=Wearer("Tom")).urgency == "high"
    assert triage(thread(("Priya", "I'm home now, lovely evening")), wearer=Wearer("Tom")).urgency == "low"


def test_question_is_normal_and_needs_reply():
    result = triage(thread(("Priya", "Are you coming to the review on Friday?")), wearer=Wearer("Tom"))
    assert result.urgency == "normal"
    assert result.needs_reply
    assert "asks a question" in result.reason


def test_social_chatter_is_low_and_needs_no_reply():
    result = triage(thread(("Priya", "haha that was fun"), ("Ann", "lol so true 😂")), wearer=Wearer("Tom"))
    assert result == Triage("low", False, "social chatter or FYI")


def test_fyi_with_a_plan_is_normal_without_reply():
    result = triage(thread(("Priya", "FYI the standup moved to 10:30 tomorrow.")), wearer=Wearer("Tom"))
    assert result.urgency == "normal"
    assert not result.needs_reply


def test_wearer_already_replied_so_nothing_is_owed():
    msgs = thread(("Priya", "Can you send the slides asap?"), ("Tom", "Sent!"))
    assert triage(msgs, wearer=Wearer("Tom")) == Triage("low", False, "nothing new from others")
    assert triage(msgs, wearer=Wearer("tom ")).needs_reply is False  # sender match ignores case/space


def test_only_messages_after_the_wearers_last_message_count():
    msgs = thread(("Priya", "Urgent: can you call?"), ("Tom", "Done."), ("Priya", "thanks, all good"))
    result = triage(msgs, wearer=Wearer("Tom"))
    assert result.urgency == "low" and not result.needs_reply


def test_addressing_the_wearer_by_name_needs_reply():
    result = triage(thread(("Priya", "Tom, the keys are with the concierge")), wearer=Wearer("Tom Baker"))
    assert result.needs_reply
    assert "addresses Tom Baker" in result.reason
    assert not triage(thread(("Priya", "Tomorrow the keys are with the concierge")), wearer=Wearer("Tom")).needs_reply


def test_a_wearer_who_has_not_spoken_owes_everything_others_asked():
    msgs = thread(("Priya", "Can you pick up milk?"), ("Ann", "lol"))
    assert triage(msgs, wearer=Wearer("Tom")).needs_reply
    assert not triage(msgs).needs_reply  # without a wearer only Ann's closing "lol" counts


def test_without_a_wearer_the_last_speakers_run_counts():
    msgs = thread(("Priya", "Dinner at 7?"), ("Ann", "yes!"), ("Ann", "see you"))
    assert not triage(msgs).needs_reply
    assert triage(msgs[:1]).needs_reply


def test_empty_thread():
    assert triage([]) == Triage("low", False, "no messages")
