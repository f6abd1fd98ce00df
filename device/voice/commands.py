"""Spoken commands: a transcript to one of eight words, or None.

A transcript is a command only when, once filler ("uh", "okay", "it",
"please" ...) is removed, every word left is that one command word or a near
miss of it. Anything else, such as a dictated reply that merely contains
"send" or "reply", is not a command: answering a message the wearer did not
mean to send is worse than asking again. A short transcript that is no command
may still be one misheard: `recognize_command` then asks the recognizer which
command word the audio is, and takes it only when one stands clearly out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from enum import Enum
from typing import Protocol

import numpy as np
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


class Scorer(Protocol):
    def score(self, audio: np.ndarray, texts: Sequence[str], *, prompt: str = "") -> list[float]: ...


# Each command word as whisper writes it said alone.
SPOKEN_COMMANDS: tuple[str, ...] = tuple(f"{word.capitalize()}." for word in COMMAND_WORDS)
# A command heard as another short word ("Send." as "And...", "Cancel." as "Console."): the recognizer,
# forced through each command word on the same audio, finds the one said. Measured on espeak voices
# (2026-12-02, the voice bench's phrases, 3 espeak voices, clean and noisy): the 10 misheard commands
# scored -3.4 to -7.7 (log-probability) and at least 2.2 above the next command word; for the 90 dictated
# replies the best command word scored -7.8 or lower. A command word is taken at -7 or better and 2
# clear of the next; the dictation set (not used to choose these) checks it in the bench.
_MIN_LOGPROB = -7.0
_MIN_MARGIN = 2.0
_MAX_RESCUED_WORDS = 4
# "Don't send", "not now": a transcript that refuses is never turned into a command.
_REFUSAL = re.compile(r"\b(?:no|not|don'?t|do not|never|wait|stop|hold on)\b|n't\b", re.IGNORECASE)


def recognize_command(text: str, audio: np.ndarray, scorer: Scorer, *, prompt: str = "") -> Command | None:
    """The command in `text`, else the command word `audio` is most clearly heard as, else None."""
    if (command := match_command(text)) is not None:
        return command
    if not text.strip() or len(text.split()) > _MAX_RESCUED_WORDS or _REFUSAL.search(text):
        return None
    scores = scorer.score(audio, SPOKEN_COMMANDS, prompt=prompt)
    ranked = sorted(zip(scores, COMMAND_WORDS), reverse=True)
    (best, word), (second, _) = ranked[0], ranked[1]
    return Command(word) if best >= _MIN_LOGPROB and best - second >= _MIN_MARGIN else None
