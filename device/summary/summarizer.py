"""Turn a thread's unread messages into a short, faithful, speakable summary.

Two paths, and every summary records which one produced it:

* model: the LLM (with its task adapter) writes one or two sentences. Threads
  longer than the context budget are folded into a rolling summary, piece by
  piece, so nothing is silently cut. The result must pass the grounding
  validator; on failure it is retried once with sampling, then abandoned.
* extractive: the most informative messages, shortened, quoted verbatim. It
  is always faithful, and is what the wearer hears whenever the model path
  is unavailable or its output did not pass.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Literal

from tidings.device.config import SummarizerConfig
from tidings.device.llm.engine import Engine
from tidings.device.summary.extractive import extractive_summary
from tidings.device.summary.grounding import check_grounding
from tidings.device.messages import Message
from tidings.device.llm.prompts import (
    REPLY_TASK,
    SUMMARY_TASK,
    render_dialogue,
    reply_prompt,
    summary_prompt,
)
from tidings.device.summary.sentences import sentences
from tidings.device.summary.triage import Triage, fallback_suggestions, triage

Source = Literal["model", "extractive"]
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_SPEAKER_LINE = re.compile(r"^\s*[^\s:]{1,40}:\s", re.MULTILINE)


@dataclass(frozen=True)
class ThreadSummary:
    thread: str
    summary: str
    source: Source
    urgency: str
    needs_reply: bool
    suggestions: tuple[str, ...]
    suggestions_source: Literal["model", "template", "none"]
    senders: tuple[str, ...]
    message_ids: tuple[str, ...]
    # Why model drafts were turned down, in order; empty when the model's first draft passed.
    rejected: tuple[str, ...] = ()

    def to_json(self) -> dict:
        record = asdict(self)
        record["suggestions"] = list(self.suggestions)
        record["senders"] = list(self.senders)
        record["message_ids"] = list(self.message_ids)
        record["rejected"] = list(self.rejected)
        return record


@dataclass(frozen=True)
class SummaryOutcome:
    text: str
    source: Source
    rejected: tuple[str, ...]  # why each turned-down model draft was turned down
    drafts: tuple[str, ...]  # every model draft, in order (the first is greedy)


class Summarizer:
    """Summaries from `engine` when given one, else extractive summaries only."""

    def __init__(self, config: SummarizerConfig, engine: Engine | None = None) -> None:
        self.config = config
        self.engine = engine

    def summarize(self, thread: str, messages: Sequence[Message]) -> ThreadSummary:
        if not messages:
            raise ValueError(f"thread {thread!r} has no messages to summarize")
        return self.record(thread, messages, self.summary_text(messages))

    def record(self, thread: str, messages: Sequence[Message], outcome: SummaryOutcome,
               with_suggestions: bool = True) -> ThreadSummary:
        """The thread's summary record around `outcome`: triage, senders and reply options."""
        others = [m for m in messages if m.sender != self.config.wearer] or list(messages)
        triaged = triage(messages, self.config.wearer or None)
        suggestions, suggestions_source = self._suggestions(messages, triaged) if with_suggestions else ([], "none")
        return ThreadSummary(
            thread=thread,
            summary=outcome.text,
            source=outcome.source,
            urgency=triaged.urgency,
            needs_reply=triaged.needs_reply,
            suggestions=tuple(suggestions),
            suggestions_source=suggestions_source,
            senders=tuple(dict.fromkeys(m.sender for m in others)),
            message_ids=tuple(m.id for m in messages),
            rejected=outcome.rejected,
        )

    # -- the summary ------------------------------------------------------------

    def summary_text(self, messages: Sequence[Message]) -> SummaryOutcome:
        drafts: list[str] = []
        rejected: list[str] = []
        if self.engine is not None:
            for attempt in range(1 + self.config.retries):
                # A greedy retry would repeat the same words; the retry samples.
                draft = self.model_summary(messages, temperature=0.0 if attempt == 0 else 0.7)
                drafts.append(draft)
                problem = self.problem_with(draft, messages)
                if problem is None:
                    return SummaryOutcome(draft, "model", tuple(rejected), tuple(drafts))
                rejected.append(problem)
        text = extractive_summary(messages, self.config.extractive_max_words)
        return SummaryOutcome(text, "extractive", tuple(rejected), tuple(drafts))

    def stream_summary(self, messages: Sequence[Message]) -> SummaryStream:
        """The summary sentence by sentence, each as soon as it is generated and checked."""
        return SummaryStream(self, messages)

    def model_summary(self, messages: Sequence[Message], temperature: float) -> str:
        earlier = ""
        for piece in self.fold(messages):
            prompt = summary_prompt(self.engine.prompt_format, render_dialogue(piece), earlier)
            beams = self.config.summary_beams if temperature == 0 else 1
            completion = self.engine.complete(
                prompt, max_tokens=self.config.max_summary_tokens, stop=("\n\n",), temperature=temperature,
                beams=beams, length_penalty=self.config.summary_length_penalty,
            )
            earlier = " ".join(completion.text.split())
        return earlier

    def fold(self, messages: Sequence[Message]) -> list[list[Message]]:
        """Split a thread into consecutive pieces whose dialogue fits the context budget.

        A single message too long for the budget is split into several, at
        sentence (or, failing that, word) boundaries, so every word is read.
        """
        budget = self.config.context_budget_tokens
        pieces: list[list[Message]] = [[]]
        used = 0
        for message in messages:
            for part in self._fit(message, budget):
                cost = self.engine.count_tokens(f"{part.sender}: {part.text}\n")
                if pieces[-1] and used + cost > budget:
                    pieces.append([])
                    used = 0
                pieces[-1].append(part)
                used += cost
        return pieces

    def _fit(self, message: Message, budget: int) -> list[Message]:
        if self.engine.count_tokens(message.text) <= budget:
            return [message]
        units = _SENTENCE_END.split(message.text)
        if len(units) == 1:
            units = message.text.split()
        parts: list[Message] = []
        current: list[str] = []
        for unit in units:
            if current and self.engine.count_tokens(" ".join([*current, unit])) > budget * 0.8:
                parts.append(replace(message, text=" ".join(current)))
                current = []
            current.append(unit)
        parts.append(replace(message, text=" ".join(current)))
        return parts

    def problem_with(self, draft: str, messages: Sequence[Message], min_words: int = 3) -> str | None:
        """None if `draft` may be spoken as this thread's summary, else why not."""
        words = draft.split()
        if len(words) < min_words:
            return f"too short: {draft!r}"
        if len(words) > self.config.max_summary_words:
            return f"too long: {len(words)} words"
        if SUMMARY_TASK[:30] in draft or _SPEAKER_LINE.search(draft):
            return "echoes the prompt instead of summarizing"
        report = check_grounding(draft, messages)
        if not report.ok:
            return "not grounded in the messages: " + ", ".join(report.unsupported)
        return None

    # -- reply suggestions ----------------------------------------------------

    def _suggestions(self, messages: Sequence[Message], triaged: Triage) -> tuple[list[str], str]:
        if not triaged.needs_reply:
            return [], "none"
        if self.engine is not None:
            suggestions = self._model_suggestions(messages)
            if len(suggestions) >= 2:
                return suggestions, "model"
        return fallback_suggestions(messages, self.config.wearer or None)[: self.config.suggestions], "template"

    def _model_suggestions(self, messages: Sequence[Message]) -> list[str]:
        piece = self.fold(messages)[-1]
        prompt = reply_prompt(self.engine.prompt_format, render_dialogue(piece), self.config.wearer)
        found: list[str] = []
        # One greedy reply, then sampled ones for variety; the shared prompt is evaluated once.
        for attempt in range(self.config.suggestions + 2):
            text = self.engine.complete(
                prompt, max_tokens=40, stop=("\n",), temperature=0.0 if attempt == 0 else 0.8
            ).text
            reply = " ".join(text.split()).removeprefix(f"{self.config.wearer}:").strip()
            ok = 1 <= len(reply.split()) <= 25 and REPLY_TASK[:20] not in reply
            if ok and check_grounding(reply, messages).ok and reply.lower() not in map(str.lower, found):
                found.append(reply)
            if len(found) == self.config.suggestions:
                break
        return found


class SummaryStream:
    """Iterate for the summary's sentences; afterwards `outcome` holds the whole summary.

    For a thread that fits one prompt, the model's greedy draft is streamed and
    each sentence is checked on its own as it completes (length, prompt echo,
    grounding), so a sentence is spoken only once it has passed; the first
    sentence that fails ends the summary there. When the very first sentence
    fails, or the thread needs folding, the whole summary comes from
    `summary_text` (sampled retry, then extractive) and is then split.
    """

    def __init__(self, summarizer: Summarizer, messages: Sequence[Message]) -> None:
        self.summarizer = summarizer
        self.messages = list(messages)
        self.outcome: SummaryOutcome | None = None

    def __iter__(self) -> Iterator[str]:
        summarizer, engine = self.summarizer, self.summarizer.engine
        spoken: list[str] = []
        if engine is not None and len(pieces := summarizer.fold(self.messages)) == 1:
            prompt = summary_prompt(engine.prompt_format, render_dialogue(pieces[0]))
            stream = engine.stream(prompt, max_tokens=summarizer.config.max_summary_tokens, stop=("\n\n",))
            for sentence in sentences(stream):
                sentence = " ".join(sentence.split())
                words = sum(len(s.split()) for s in spoken) + len(sentence.split())
                if words > summarizer.config.max_summary_words or summarizer.problem_with(
                        sentence, self.messages, min_words=1 if spoken else 3):
                    break
                spoken.append(sentence)
                yield sentence
        if spoken:
            text = " ".join(spoken)
            self.outcome = SummaryOutcome(text, "model", (), (text,))
            return
        self.outcome = summarizer.summary_text(self.messages)
        yield from sentences([self.outcome.text])
