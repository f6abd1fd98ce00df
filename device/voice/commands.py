"""Spoken commands: a transcript to one of eight words, or None.

A transcript is a command only when, once filler ("uh", "okay", "it",
"please" ...) is removed, every word left is that one command word or a near
miss of it. Anything else, such as a dictated reply that merely contains
"send" or "reply", is not a command: answering a message the wearer did not
mean to send is worse than asking again.
"""

from __future__ import annotations

import re
from enum import Enum

from rapidfuzz import fuzz, process


class Command(Enum):
    READ = "read"
    NEXT = "next"
    REPLY = "reply"
    REPEAT = "repeat"
    SEND = "send"
    CANCEL = "cancel"
    EDIT = "edit"
    SKIP = "skip"


COMMAND_WORDS: tuple[str, ...] = tuple(command.value for command in Command)

_FILLER = frozenset("""
    uh uhh um umm er erm ah hm hmm mm oh ok okay alright yeah yes well so now then just and
    hey please go ahead let's lets it that this the one a message thanks thank you to her him them
""".split())
# Homophones whisper may write for a command word said alone, too far from
# it for the fuzzy match.
_SOUNDALIKES = {"red": Command.READ, "reed": Command.READ}
# Similarity (0-100) a word needs to count as a near miss of a command word:
# 80 admits "sends", "canceled", "replay" and rejects "sand" or "seed" (send).
# Every command word has 4 letters or more; in a shorter word one letter off is
# too much ("end" is not "send").
_MIN_SCORE = 80
_MIN_FUZZY_LENGTH = 4


def _command_of(word: str) -> Command | None:
    if word in _SOUNDALIKES:
        return _SOUNDALIKES[word]
    if len(word) < _MIN_FUZZY_LENGTH:
        return None
    best = process.extractOne(word, COMMAND_WORDS, scorer=fuzz.ratio, score_cutoff=_MIN_SCORE)
    return Command(best[0]) if best else None


def match_command(text: str) -> Command | None:
    words = [w for w in re.findall(r"[a-z']+", text.lower()) if w not in _FILLER]
    commands = {_command_of(word) for word in words}
    if len(commands) != 1:
        return None
    return commands.pop()
