"""Extractive fallback summary: the thread's most informative sentences, verbatim.

Used when the on-device model is unavailable, too slow, or produced a summary
that failed the grounding check. It never paraphrases: it picks whole sentences
(or leading clauses of a long one) from the messages, attributes each to its
sender and keeps them in chronological order, so the result is grounded by
construction, and ``check_grounding`` confirms it before it is returned.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice

from tidings.device.summary.grounding import check_grounding
from tidings.device.messages import Message

# Possessive quantifiers: long whitespace runs must not cost quadratic backtracking.
_SENTENCE_BREAK = re.compile(r"(?<=[.!?…؟。！？])\s++|\n\s*+")
# A clause ends at , ; or : plus a space, but not inside "20, 000" or "Note: 5".
_CLAUSE_BREAK = re.compile(r"(?<=[,;:])\s++(?!\d)")
_WORD = re.compile(r"\w+")
_NONSPACE = re.compile(r"\S+")
_ENDS_SENTENCE = re.compile(r"[.!?…؟。！？]['\")\]]*$")
_QUESTION = re.compile(r"[?؟？]")
_REQUEST = re.compile(
    r"\b(?:(?:can|could|would|will) (?:you|u)|please|pls|plz|let me know|lmk|(?:need|want) you to"
    r"|don'?t forget|remember to|make sure)\b", re.IGNORECASE)
_URGENT = re.compile(
    r"\b(?:urgent|asap|emergency|immediately|right away|right now|leak\w*|hospital|deadline)\b",
    re.IGNORECASE)
_SPECIFIC = re.compile(
    r"\d|\b(?:today|tonight|tomorrow|yesterday|monday|tuesday|wednesday|thursday|friday|saturday"
    r"|sunday|weekend|noon|midnight|january|february|march|april|may|june|july|august|september"
    r"|october|november|december)\b", re.IGNORECASE)
_IMPERATIVES = frozenset("""
    send bring call come meet check buy get pick grab book remember don't dont let tell ask text
    take wait stop go join read sign pay email reply confirm cancel move keep leave
    """.split())
_STOPWORDS = frozenset("""
    a an the and or but so to of in on at for with is are was were be been am i you he she it
    we they me him her us them my your his its our their this that there here what do did does
    have has had not no yes ok okay lol haha hahaha hi hey hello thanks thank just too very
    u ur im i'm it's will would can could should oh yeah yep sure well
    """.split())
_ATTACHMENT = re.compile(r"<\w+>")
# A whitespace-free run longer than this (a URL, a pasted blob) cannot be read aloud.
_MAX_TOKEN_CHARS = 40
# Per message, only this many sentences from each end are candidates: a megabyte
# message must not cost quadratic work, and its middle is rarely the point.
_EDGE_SENTENCES = 200
# Only a sentence's opening can be read out within the word budget, so only it is scored.
_SCORED_CHARS = 1000
_MIN_SCORE = 1.0


@dataclass(frozen=True)
class _Unit:
    order: tuple[int, int]  # (message position, sentence position): chronology
    sender: str
    text: str
    words: int
    content: frozenset[str]
    score: float


def _score(text: str, position: float) -> tuple[float, frozenset[str]]:
    tokens = [t.casefold() for t in _WORD.findall(text)]
    content = frozenset(t for t in tokens if t not in _STOPWORDS and len(t) > 1)
    score = min(len(content), 10) / 5
    score += 2.0 * bool(_QUESTION.search(text)) + 2.0 * bool(_REQUEST.search(text))
    score += 2.5 * bool(_URGENT.search(text)) + 1.5 * bool(_SPECIFIC.search(text))
    score += 1.0 * bool(tokens and tokens[0] in _IMPERATIVES)
    if len(tokens) < 3:
        score -= 1.0
    if _ATTACHMENT.fullmatch(text):
        score -= 3.0
    return score + 0.5 * position, content


def _units(thread: Sequence[Message]) -> list[_Unit]:
    units: list[_Unit] = []
    for i, message in enumerate(thread):
        sentences = [s.strip() for s in _SENTENCE_BREAK.split(message.text)]
        indexed = [(j, s) for j, s in enumerate(sentences) if s]
        if len(indexed) > 2 * _EDGE_SENTENCES:
            indexed = indexed[:_EDGE_SENTENCES] + indexed[-_EDGE_SENTENCES:]
        # A reply to a question usually carries the decision the question asked for.
        answers = i > 0 and thread[i - 1].sender != message.sender and "?" in thread[i - 1].text
        for j, sentence in indexed:
            words = sentence.split()
            if max(map(len, words)) > _MAX_TOKEN_CHARS:
                continue
            score, content = _score(sentence[:_SCORED_CHARS], i / max(len(thread) - 1, 1))
            score += 1.0 * (answers and j == indexed[0][0] and len(words) >= 3)
            units.append(_Unit((i, j), _sender(message), sentence, len(words), content, score))
    return units


def _sender(message: Message) -> str:
    return " ".join(message.sender.split()) or "Someone"


def _fit(text: str, budget: int) -> str:
    """The longest prefix of ``text`` within ``budget`` words, cut in the original
    string (whitespace untouched): at the last clause end if one fits, else after
    the last word that fits; the cut is marked with "…"."""
    words = list(islice(_NONSPACE.finditer(text), budget + 1))
    if len(words) <= budget:
        return text
    limit = words[max(budget, 1) - 1].end()
    end = limit
    for clause in _CLAUSE_BREAK.finditer(text):
        if clause.start() > limit:
            break
        end = clause.start()
    return text[:end].rstrip(",;:-– ") + "…"


def _gain(unit: _Unit, said: set[str]) -> float:
    """Score less the share of the unit's content words already said."""
    overlap = len(unit.content & said) / len(unit.content) if unit.content else 1.0
    return unit.score - 2.0 * overlap


def _select(units: list[_Unit], max_words: int) -> list[tuple[_Unit, str]]:
    chosen: list[tuple[_Unit, str]] = []
    said: set[str] = set()
    budget = max_words
    pool = sorted(units, key=lambda u: -u.score)[:300]
    while pool and budget > 1:
        best = max(pool, key=lambda u: _gain(u, said))
        pool.remove(best)
        if chosen and _gain(best, said) < _MIN_SCORE:
            break
        cost = len(best.sender.split())
        if best.words + cost > budget:
            if chosen:
                continue
            text = _fit(best.text, budget - cost)
        else:
            text = best.text
        chosen.append((best, text))
        said |= best.content
        budget -= len(text.split()) + cost
    return sorted(chosen, key=lambda c: c[0].order)


def _render(chosen: list[tuple[_Unit, str]]) -> str:
    parts: list[str] = []
    last_sender = None
    for unit, text in chosen:
        if not _ENDS_SENTENCE.search(text):
            text = text.rstrip(",;:-– ") + "."
        parts.append(text if unit.sender == last_sender else f"{unit.sender}: {text}")
        last_sender = unit.sender
    return " ".join(parts)


def _who_sent(thread: Sequence[Message], one: str, many: str) -> str:
    """An honest stand-in when nothing can be quoted: who sent what."""
    senders = list(dict.fromkeys(_sender(m) for m in thread))
    if not senders:
        return "No messages."
    names = ", ".join(senders[:3]) + (" and others" if len(senders) > 3 else "")
    return f"{names} sent {one if len(thread) == 1 else many}."


def extractive_summary(messages: Sequence[Message], max_words: int = 40) -> str:
    """A speakable, verbatim summary of ``messages`` in at most about ``max_words`` words."""
    thread = [m for _, m in sorted(enumerate(messages), key=lambda im: (im[1].sent_at, im[0]))]
    units = _units(thread)
    if not units:
        if all(not m.text.strip() for m in thread):
            return _who_sent(thread, "an empty message", "empty messages")
        return _who_sent(thread, "a message", "messages")
    chosen = _select(units, max(max_words, 4))
    summary = _render(chosen)
    # Verbatim text is grounded by construction; this guards the construction.
    report = check_grounding(summary, thread)
    if not report:
        chosen = [c for c in chosen if not any(fact in c[1] for fact in report.unsupported)]
        summary = _render(chosen)
        if not chosen or not check_grounding(summary, thread):
            return _who_sent(thread, "a message", "messages")
    return summary
