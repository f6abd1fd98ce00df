"""Read a short thread as it was written: no summary can be shorter or more faithful.

Each sender's run of messages is read under their name ("Mom: ..."), the wearer's own
as "You: ...", and a message that opens by naming the wearer ("Alex, could you do
it?") is said to be to them ("Mom, to you: could you do it?"). Text is cleaned for
speech (links, emoji, attachments) and otherwise left exactly as sent. A thread with a
correction is not read this way (`Summarizer.plan`): its first version would be heard as
the plan.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from tidings.device.messages import Message
from tidings.device.summary.spoken import for_speech
from tidings.device.summary.wearer import Wearer

_ENDS_SENTENCE = re.compile(r"[.!?…。！？]['\")\]]*$")


def word_count(messages: Sequence[Message]) -> int:
    return sum(len(m.text.split()) for m in messages)


def strip_vocative(text: str, wearer: Wearer) -> tuple[bool, str]:
    """(True, the text without it) when a sentence of `text` opens by addressing the wearer: "Alex, ...",
    "@Alex ...", "Hi Alex! ...", "Perfect. Alex, are you in?"."""
    pattern = wearer.pattern()
    if pattern is None:
        return False, text
    vocative = re.compile(rf"(^|[.!?…]\s+)\s*(?:(?:hi|hey|hello|dear|yo)\s+)?(?:{pattern.pattern})\s*[,!:;.-]?\s+",
                          re.IGNORECASE)
    found = False

    def drop(match: re.Match[str]) -> str:
        nonlocal found
        found = True
        return match.group(1)

    text = vocative.sub(drop, text)
    # ... and by closing with their name: "Happy to, Alex.", "with my eyes 🙈 Alex??".
    closing = re.compile(rf"()(?:\s*,|\s+[^\w\s,.!?]+)\s*(?:{pattern.pattern})(?=[.!?]+(?:\s|$))", re.IGNORECASE)
    text = closing.sub(drop, text)
    text = re.sub(r"(^|[.!?…]\s+)([a-z])", lambda m: m.group(1) + m.group(2).upper(), text) if found else text
    return found, text


def _sentence(text: str) -> str:
    return text if _ENDS_SENTENCE.search(text) else text + "."


def read_verbatim(messages: Sequence[Message], wearer: Wearer = Wearer()) -> str:
    parts: list[str] = []
    last_speaker = None
    # With one other person in the thread, their questions can only be to the wearer.
    one_to_one = bool(wearer) and len({m.sender for m in messages if not wearer.is_sender(m.sender)}) == 1
    for message in messages:
        mine = wearer.is_sender(message.sender)
        to_wearer, text = (False, message.text) if mine else strip_vocative(message.text, wearer)
        text = for_speech(text)
        if not text:
            continue
        speaker = "You" if mine else " ".join(message.sender.split()) or "Someone"
        if not mine and (to_wearer or one_to_one) and "?" in text:
            label, to_wearer = f"{speaker} asks you", True
        else:
            label = f"{speaker}, to you" if to_wearer else speaker
        if speaker == last_speaker and not to_wearer:
            parts.append(_sentence(text))
        else:
            parts.append(f"{label}: {_sentence(text)}")
        last_speaker = speaker
    return " ".join(parts)
