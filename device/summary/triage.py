"""Triage: how urgent is a thread, does the wearer owe a reply, and safe quick replies.

Deterministic rules, no model: they run before (and independently of) any
summary, so a wearer hears "urgent, needs a reply" even when the model is off.
Only what others said since the wearer last spoke counts: once the wearer has
answered, the thread is handled. Reply options are replies.py's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from tidings.device.messages import Message
from tidings.device.summary.grounding import COMMON_WORDS
from tidings.device.summary.wearer import Wearer

Urgency = Literal["low", "normal", "high"]


@dataclass(frozen=True)
class Triage:
    urgency: Urgency
    needs_reply: bool
    reason: str  # short and human-readable, e.g. "asks a question; mentions 'urgent'"
    spam: bool = False  # every new message looks like a scam or an injected instruction


# Possessive, line-bound whitespace: a megabyte of blank lines must not backtrack.
QUESTION = re.compile(
    r"\?|^[ \t]*+(?:are|is|do|does|did|can|could|would|will|should|shall|have|has|when|what|where"
    r"|who|why|how|which|wanna|want)[ \t]++(?:you|u|we|i)\b", re.IGNORECASE | re.MULTILINE)
REQUEST = re.compile(
    r"\b(?:(?:can|could|would|will|are|r) (?:you|u)|(?:if|whether) (?:you|u) (?:can|could|would)|let me know|lmk"
    r"|(?:need|want) you to|don'?t forget|remember to|make sure|(?:call|text|ring) me)\b|\b(?:please|pls|plz)[ \t]+\w"
    r"|(?:^|[.!?,;:])[ \t]*+(?:call|text|send|bring|come|check|pick|buy|tell|reply|confirm|meet)\b",
    re.IGNORECASE | re.MULTILINE)
_URGENT = re.compile(
    r"\b(?:urgent(?:ly)?|asap|emergency|immediately|right away|right now|leak(?:s|ing)?"
    r"|hospital|ambulance|911|accident)\b", re.IGNORECASE)
# "now" alone is everyday ("I'm home now"); it is urgent when asking for something.
_NOW = re.compile(r"\bnow\b", re.IGNORECASE)
_SAME_DAY = re.compile(
    r"\b(?:today|tonight|this (?:morning|afternoon|evening)|in (?:an?|one|half an) hour"
    r"|in \d+ ?(?:min|mins|minutes|hours?)\b|by (?:\d{1,2}(?:[:.]\d\d)?[ \t]*+(?:am|pm)?|noon|eod)"
    r"|end of (?:the )?day)\b", re.IGNORECASE)
# Plans and changes to them are worth hearing even when nobody asks anything.
_SCHEDULE = re.compile(
    r"\b\d{1,2}(?::\d\d|\s?[ap]m)\b|\b(?:tonight|tomorrow|monday|tuesday|wednesday|thursday"
    r"|friday|saturday|sunday|noon|deadline|meeting|appointment|moved|cancel(?:l?ed)?|postponed"
    r"|rescheduled)\b", re.IGNORECASE)

def _same(a: str, b: str) -> bool:
    return a.strip().casefold() == b.strip().casefold()


def unanswered(messages: Sequence[Message], wearer: Wearer) -> list[Message]:
    """Messages from others the wearer has not answered yet.

    With a known wearer: everything others sent after the wearer's last message
    (all of it if the wearer has not spoken). Without one: the last speaker's
    closing run of messages, the part a newcomer to the thread would react to.
    """
    if wearer:
        spoke = [i for i, m in enumerate(messages) if wearer.is_sender(m.sender)]
        return [m for m in messages[spoke[-1] + 1 if spoke else 0:] if not wearer.is_sender(m.sender)]
    tail: list[Message] = []
    for message in reversed(messages):
        if tail and not _same(message.sender, tail[-1].sender):
            break
        tail.append(message)
    return tail[::-1]


# Where one sentence of a chat message ends and the next begins (replies.py splits asks with it too).
SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|\n+")
# A sentence opening with a name: a member's, or any capitalized one put a request ("Lorenz could you ...").
_OPENING_NAME = re.compile(r"\W*@?([^\W\d_]+)(,?\s+(?:can|could|would|will|pls|please)\b)?")


def asks_of_wearer(messages: Sequence[Message], wearer: Wearer) -> list[Message]:
    """The messages others sent since the wearer last spoke that ask a question or make a request of them.

    In a group, an ask that opens with another member's name ("Lorenz could you grab them?") is theirs,
    and one that names the wearer as whom to pay or send to ("send it to alex") is put to the others.
    """
    if not wearer:
        return []
    others = {m.sender.split()[0].casefold() for m in messages if m.sender.split() and not wearer.is_sender(m.sender)}

    def asks_the_wearer(message: Message) -> bool:
        for sentence in SENTENCE_BREAK.split(message.text):
            if wearer.is_named_as_recipient(sentence):
                continue
            if wearer.is_named_in(sentence):
                return True
            opening = _OPENING_NAME.match(sentence)
            name = opening.group(1) if opening else ""
            if name.casefold() in others - {(message.sender.split() or [""])[0].casefold()} or (
                    opening and opening.group(2) and name[0].isupper() and name.casefold() not in COMMON_WORDS):
                continue
            if QUESTION.search(sentence) or REQUEST.search(sentence):
                return True
        return False

    return [m for m in unanswered(messages, wearer) if asks_the_wearer(m)]


def triage(messages: Sequence[Message], wearer: Wearer = Wearer()) -> Triage:
    """Urgency and whether a reply is owed, from what others said since the wearer spoke."""
    pending = unanswered(messages, wearer)
    if not pending:
        return Triage("low", False, "nothing new from others" if messages else "no messages")
    text = "\n".join(m.text for m in pending)
    reasons: list[str] = []
    asks = bool(QUESTION.search(text))
    requests = bool(REQUEST.search(text))
    named = wearer.is_named_in(text)
    if asks:
        reasons.append("asks a question")
    if requests:
        reasons.append("makes a request")
    if named:
        reasons.append(f"addresses {wearer.name}")
    needs_reply = asks or requests or named
    urgent = [m.group(0).lower() for m in _URGENT.finditer(text)]
    if needs_reply and _NOW.search(text):
        urgent.append("now")
    deadline = _SAME_DAY.search(text) if needs_reply else None
    for word in dict.fromkeys(urgent):
        reasons.append(f"mentions '{word}'")
    if deadline:
        reasons.append(f"same-day deadline '{deadline.group(0).lower()}'")
    if urgent or deadline:
        urgency: Urgency = "high"
    elif needs_reply or _SCHEDULE.search(text):
        urgency = "normal"
        if not needs_reply:
            reasons.append("mentions a time or plan")
    else:
        urgency = "low"
        reasons.append("social chatter or FYI")
    return Triage(urgency, needs_reply, "; ".join(reasons))
