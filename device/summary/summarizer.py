"""Turn a thread's unread messages into a short, faithful, speakable summary, said to the wearer.

The summary plan, in order; every summary records which step produced it (`source`):

* verbatim: a thread whose unread messages are about as short as a summary, and
  correct nothing they said before, is read out as written, each message under its
  sender's name (verbatim.py);
* model: the LLM (with its task adapter) writes one or two sentences. Threads
  longer than the context budget are folded into a rolling summary, piece by
  piece, so nothing is silently cut. A draft must pass every validator
  (validators.py: length, prompt echo, grounding, then who does what, negation,
  asks and superseded values); a failed draft is retried once with sampling. Said
  to a wearer, only when `[summarizer] model_drafts_for_wearer` trusts the adapter
  to (off by default: the shipped one was trained on third-person summaries);
* fallback: the key messages, attributed, in their own words (fallback.py). It is
  what the wearer hears whenever there is no model, no trusted one or no draft passed.

Before any of it, messages that try to instruct the summarizer or look like scams
are set aside (untrusted.py): the model never sees them, they are never read as
written, and the wearer hears in Tidings' own words that such a message came.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import Literal

from tidings.device.config import SummarizerConfig
from tidings.device.llm.engine import Engine
from tidings.device.llm.prompts import REPLY_TASK, render_dialogue, reply_prompt, summary_prompt
from tidings.device.messages import Message
from tidings.device.summary.fallback import fallback_summary
from tidings.device.summary.sentences import sentences
from tidings.device.summary.relations import corrected_later
from tidings.device.summary.replies import Ask, AskKind, ReplyOptions, reply_options
from tidings.device.summary.triage import Triage, asks_of_wearer, triage
from tidings.device.summary.untrusted import Suspicion, suspicions, warning
from tidings.device.summary.validators import repeats, validate
from tidings.device.summary.verbatim import read_verbatim, word_count
from tidings.device.summary.wearer import Wearer, address_wearer

Source = Literal["model", "verbatim", "fallback"]
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


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
    # Why model drafts were turned down, in order ("subject: ..."); empty when the first passed.
    rejected: tuple[str, ...] = ()
    # Every new message looks like a scam or an injected instruction.
    spam: bool = False
    # Messages set aside as untrusted, and why ("scam: asks for a code, password or bank details").
    flagged: tuple[str, ...] = ()
    # What the thread asks of the wearer (replies.py), and reply options written but not offered, "check: option".
    ask: AskKind = "none"
    suggestions_rejected: tuple[str, ...] = ()

    def to_json(self) -> dict:
        record = asdict(self)
        record["suggestions"] = list(self.suggestions)
        record["senders"] = list(self.senders)
        record["message_ids"] = list(self.message_ids)
        record["rejected"] = list(self.rejected)
        record["flagged"] = list(self.flagged)
        record["suggestions_rejected"] = list(self.suggestions_rejected)
        return record


@dataclass(frozen=True)
class SummaryOutcome:
    text: str
    source: Source
    rejected: tuple[str, ...]  # why each turned-down model draft was turned down
    drafts: tuple[str, ...]  # every model draft, in order (the first is greedy)
    flagged: tuple[Suspicion, ...] = ()


class Summarizer:
    """Summaries from `engine` when given one, else verbatim and fallback summaries only."""

    def __init__(self, config: SummarizerConfig, engine: Engine | None = None, wearer: Wearer = Wearer()) -> None:
        self.config = config
        self.engine = engine
        self.wearer = wearer
        # What reply drafts run under: device/fleet.py puts the wearer's personal adapter on top here.
        self.reply_adapters: Callable[[], AbstractContextManager] = contextlib.nullcontext

    def summarize(self, thread: str, messages: Sequence[Message]) -> ThreadSummary:
        if not messages:
            raise ValueError(f"thread {thread!r} has no messages to summarize")
        return self.record(thread, messages, self.summary_text(messages))

    def record(self, thread: str, messages: Sequence[Message], outcome: SummaryOutcome,
               with_suggestions: bool = True) -> ThreadSummary:
        """The thread's summary record around `outcome`: triage, senders and reply options."""
        others = [m for m in messages if not self.wearer.is_sender(m.sender)] or list(messages)
        flagged = {s.message_id for s in outcome.flagged}
        trusted = [m for m in messages if m.id not in flagged]
        if trusted or not flagged:
            triaged = triage(trusted, self.wearer)
        else:
            triaged = Triage("low", False, "likely scam or injected instructions", spam=True)
        wanted = with_suggestions and not triaged.spam
        replies = self.reply_options(trusted) if wanted else ReplyOptions(Ask("none"), (), "none")
        return ThreadSummary(
            thread=thread,
            summary=outcome.text,
            source=outcome.source,
            urgency=triaged.urgency,
            needs_reply=triaged.needs_reply,
            suggestions=replies.options,
            suggestions_source=replies.source,
            senders=tuple(dict.fromkeys(m.sender for m in others)),
            message_ids=tuple(m.id for m in messages),
            rejected=outcome.rejected,
            spam=triaged.spam,
            flagged=tuple(f"{s.message_id} from {s.sender}: {s.kind}"
                          + (f" ({'; '.join(s.signals)})" if s.signals else "") for s in outcome.flagged),
            ask=replies.ask.kind,
            suggestions_rejected=replies.turned_down,
        )

    # -- the summary ------------------------------------------------------------

    def summary_text(self, messages: Sequence[Message]) -> SummaryOutcome:
        flagged = tuple(suspicions(messages))
        untrusted = {s.message_id for s in flagged}
        trusted = [m for m in messages if m.id not in untrusted]
        outcome = self.plan(trusted) if trusted else SummaryOutcome("", "fallback", (), ())
        return replace(outcome, text=f"{outcome.text} {warning(flagged)}".strip(), flagged=flagged)

    def plan(self, messages: Sequence[Message]) -> SummaryOutcome:
        """Verbatim when that is short enough and nothing in it was corrected, else a model draft that passes
        every check, else the fallback (which leaves out what a correction replaced)."""
        if word_count(messages) <= self.verbatim_max_words and not corrected_later(messages):
            return SummaryOutcome(read_verbatim(messages, self.wearer), "verbatim", (), ())
        drafts: list[str] = []
        rejected: list[str] = []
        if self.drafts_by_model:
            for attempt in range(1 + self.config.retries):
                # Every beam hypothesis missing what the wearer is asked: the adapter does not say it (measured
                # on the wearer suites, no sampled retry ever did), and a retry costs about 1.5 s.
                if attempt and all(r.startswith("ask:") for r in rejected):
                    break
                # The beam's hypotheses are checked best first; a greedy retry would repeat them, so it samples.
                for draft in self.model_summaries(messages, temperature=0.0 if attempt == 0 else 0.7):
                    draft = address_wearer(draft, self.wearer)
                    drafts.append(draft)
                    problem = self.problem_with(draft, messages)
                    if problem is None:
                        return SummaryOutcome(draft, "model", tuple(rejected), tuple(drafts))
                    rejected.append(problem)
        text = fallback_summary(messages, self.fallback_max_words, self.wearer)
        return SummaryOutcome(text, "fallback", tuple(rejected), tuple(drafts))

    def stream_summary(self, messages: Sequence[Message]) -> SummaryStream:
        """The summary sentence by sentence, each as soon as it is generated and checked."""
        return SummaryStream(self, messages)

    def model_summaries(self, messages: Sequence[Message], temperature: float) -> list[str]:
        """The model's summary, then (greedy) the beam search's other finished summaries, best first.

        A thread longer than the context budget is folded: each piece's prompt carries the summary so far,
        and only the last piece's alternatives are summaries of the whole thread.
        """
        earlier: list[str] = [""]
        for piece in self.fold(messages):
            prompt = summary_prompt(self.engine.prompt_format, self.dialogue(piece), earlier[0], self.wearer.name)
            beams = self.config.summary_beams if temperature == 0 else 1
            completion = self.engine.complete(
                prompt, max_tokens=self.config.max_summary_tokens, stop=("\n\n",), temperature=temperature,
                beams=beams, length_penalty=self.config.summary_length_penalty,
            )
            earlier = [" ".join(text.split()) for text in (completion.text, *completion.runners_up)]
        return [text for text in earlier if text] or [""]

    @property
    def drafts_by_model(self) -> bool:
        """Whether the model drafts summaries: it must be there, and trusted to speak to this wearer."""
        return self.engine is not None and (self.config.model_drafts_for_wearer or not self.wearer)

    @property
    def verbatim_max_words(self) -> int:
        """Threads up to this long are read as written: about as long as a summary said to this wearer, or to nobody."""
        return self.config.verbatim_max_words if self.wearer else self.config.verbatim_max_words_no_wearer

    @property
    def fallback_max_words(self) -> int:
        return self.config.fallback_max_words if self.wearer else self.config.fallback_max_words_no_wearer

    def dialogue(self, messages: Sequence[Message]) -> str:
        """The prompt's dialogue, the wearer's own messages under the wearer's name whatever their sender id."""
        return render_dialogue([replace(m, sender=self.wearer.name) if self.wearer.is_sender(m.sender) else m
                                for m in messages])

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

    def problem_with(self, draft: str, messages: Sequence[Message], continuing: bool = False) -> str | None:
        """None if `draft` may be spoken as this thread's summary (or, `continuing`, its next sentence)."""
        asked = () if continuing else asks_of_wearer(messages, self.wearer)
        rejection = validate(draft, messages, self.wearer, min_words=1 if continuing else 3,
                             max_words=self.config.max_summary_words, asked=asked)
        return None if rejection is None else str(rejection)

    # -- reply suggestions ----------------------------------------------------

    def reply_options(self, messages: Sequence[Message]) -> ReplyOptions:
        propose = partial(self.model_replies, messages) if self.engine is not None else None
        return reply_options(messages, self.wearer, self.config.suggestions, propose)

    def model_replies(self, messages: Sequence[Message]) -> list[str]:
        """The model's next message as the wearer: one greedy, the rest sampled; the prompt is evaluated once."""
        piece = self.fold(messages)[-1]
        prompt = reply_prompt(self.engine.prompt_format, self.dialogue(piece), self.wearer.name)
        replies = []
        with self.reply_adapters():
            for attempt in range(self.config.suggestions):
                text = self.engine.complete(
                    prompt, max_tokens=40, stop=("\n",), temperature=0.0 if attempt == 0 else 0.8).text
                reply = " ".join(text.split()).removeprefix(f"{self.wearer.name}:").strip()
                if REPLY_TASK[:20] not in reply:
                    replies.append(reply)
        return replies


class SummaryStream:
    """Iterate for the summary's sentences; afterwards `outcome` holds the whole summary.

    For a thread the model would summarize in one prompt, its greedy draft is
    streamed and each sentence is checked on its own as it completes (every
    validator), so a sentence is spoken only once it has passed; the first
    sentence that fails ends the summary there. Otherwise (a thread short enough to
    read verbatim, one with untrusted messages, one that needs folding, or a first
    sentence that failed) the whole summary comes from `summary_text` and is then split.
    """

    def __init__(self, summarizer: Summarizer, messages: Sequence[Message]) -> None:
        self.summarizer = summarizer
        self.messages = list(messages)
        self.outcome: SummaryOutcome | None = None

    def __iter__(self) -> Iterator[str]:
        summarizer, engine = self.summarizer, self.summarizer.engine
        spoken: list[str] = []
        streamable = (summarizer.drafts_by_model and word_count(self.messages) > summarizer.verbatim_max_words
                      and not suspicions(self.messages))
        if streamable and len(pieces := summarizer.fold(self.messages)) == 1:
            prompt = summary_prompt(engine.prompt_format, summarizer.dialogue(pieces[0]), wearer=summarizer.wearer.name)
            stream = engine.stream(prompt, max_tokens=summarizer.config.max_summary_tokens, stop=("\n\n",))
            for sentence in sentences(stream):
                sentence = address_wearer(" ".join(sentence.split()), summarizer.wearer)
                words = sum(len(s.split()) for s in spoken) + len(sentence.split())
                if words > summarizer.config.max_summary_words or repeats([*spoken, sentence]) or \
                        summarizer.problem_with(sentence, self.messages, continuing=bool(spoken)):
                    break
                spoken.append(sentence)
                yield sentence
        if spoken:
            text = " ".join(spoken)
            self.outcome = SummaryOutcome(text, "model", (), (text,))
            return
        self.outcome = summarizer.summary_text(self.messages)
        yield from sentences([self.outcome.text])
