"""Every check a model draft must pass before the wearer hears it, cheapest first.

length, prompt echo and repetition, then grounding (every name, number, time and date is in the
messages), then relations (who does what, negation, asks, superseded values). The
first check that fails names itself in the rejection, so `rejected` in a summary's
record says exactly why a draft was turned down.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from tidings.device.messages import Message
from tidings.device.summary.grounding import COMMON_WORDS, check_grounding, same_value, values
from tidings.device.summary.relations import check_relations, stale_values
from tidings.device.summary.replies import find_ask
from tidings.device.summary.sentences import sentences
from tidings.device.summary.wearer import Wearer

_SPEAKER_LINE = re.compile(r"^\s*[^\s:]{1,40}:\s", re.MULTILINE)


@dataclass(frozen=True)
class Rejection:
    check: str  # "length", "echo", "repetition", "grounding", "ask", "subject", "negation", "superseded", "voice"
    detail: str

    def __str__(self) -> str:
        return f"{self.check}: {self.detail}"


_ADDRESSED = re.compile(r"\b(?:you|your|yours)\b", re.IGNORECASE)
_WORD = re.compile(r"[a-z][a-z'’-]{2,}")


def _stems(text: str) -> set[str]:
    """Lower-case words of three letters or more that carry content, crudely stemmed ("slides" → "slide")."""
    words = {w.strip("'’-") for w in _WORD.findall(text.casefold())} - COMMON_WORDS
    return {re.sub(r"(?:ing|ed|es|s)$", "", w) or w for w in words}


def repeats(sentences: Sequence[str]) -> str | None:
    """The first sentence that says nothing an earlier one did not: a small model looping on itself."""
    said: set[str] = set()
    seen: set[str] = set()
    for sentence in sentences:
        key = " ".join(_WORD.findall(sentence.casefold()))
        stems = _stems(sentence)
        if key in seen or (len(stems) >= 3 and stems <= said):
            return sentence
        seen.add(key)
        said |= stems
    return None


def validate(draft: str, messages: Sequence[Message], wearer: Wearer = Wearer(), *, min_words: int = 3,
             max_words: int = 60, asked: Sequence[Message] = ()) -> Rejection | None:
    """None if `draft` may be spoken as a summary of `messages`, else the first check it fails.

    `asked`: the messages that ask the wearer something. A summary that does not say so
    to them ("... asks you ..."), says none of the words of the question itself (a summary
    of the thread's other news, "you" and all), or drops a time, day or amount of what is
    asked (one no later message replaced), has dropped what they must hear.
    """
    words = draft.split()
    if len(words) < min_words:
        return Rejection("length", f"too short: {draft!r}")
    if len(words) > max_words:
        return Rejection("length", f"too long: {len(words)} words")
    if "Summarize this chat" in draft or _SPEAKER_LINE.search(draft):
        return Rejection("echo", "echoes the prompt instead of summarizing")
    if (again := repeats(sentences([draft]))) is not None:
        return Rejection("repetition", f"says again what it already said: {again!r}")
    report = check_grounding(draft, messages)
    if not report.ok:
        return Rejection("grounding", "not in the messages: " + ", ".join(report.unsupported))
    if asked:
        if not _ADDRESSED.search(draft):
            return Rejection("ask", "the messages ask you something; the draft does not say so")
        question = find_ask(messages, wearer).question
        wanted = _stems(question) - _stems(" ".join(m.sender for m in messages)) - _stems(wearer.name)
        if wanted and not wanted & _stems(draft):
            return Rejection("ask", f"says nothing of what is asked: {question!r}")
        stated = values(draft, messages[-1].sent_at)  # "today" in a summary is the day its thread is read
        stale = stale_values(messages)
        positions = {id(m): i for i, m in enumerate(messages)}
        for message in asked:
            for value in values(message.text, message.sent_at):
                if value.kind not in ("time", "money", "weekday", "date"):
                    continue
                if value.text in stale.get(positions.get(id(message), -1), ()):
                    continue
                if not any(same_value(v, value) for v in stated):
                    return Rejection("ask", f"drops {value.text!r} from what {message.sender} asks you")
    if problems := check_relations(draft, messages, wearer):
        first = problems[0]
        return Rejection(first.check, f"{first.claim!r}: {first.detail}")
    return None
