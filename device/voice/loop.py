"""The voice loop: the wearer's ears and mouth around the dialog.

    microphone ─▶ VAD endpointer ─▶ speech to text ─▶ dialog ─▶ actions ─▶ text to speech ─▶ speaker
                  ├ speech starts: playback stops (barge-in)
                  └ a pause: recognition starts while the endpointer waits to be sure it was the end
    store: new unread messages ─────────────────────▶ dialog

A capture thread reads the microphone and cuts utterances; everything else
happens in order on the loop's own thread, so the dialog sees one event at a
time. Speaking never blocks: a clip is queued on the speaker and the loop goes
on (a streamed summary's next sentence is generated while the first plays),
which is what lets the wearer interrupt it.

Every draft is in the store from the moment it is read back, so a failure
anywhere (a garbled utterance, a dead microphone, a crash) loses none.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from tidings.device.messages import Message
from tidings.device.summary.sentences import sentences
from tidings.device.store import Store
from tidings.device.summary.summarizer import Summarizer
from tidings.device.summary.untrusted import suspicions
from tidings.device.summary.wearer import Wearer
from tidings.device.tools import ToolError, send_reply
from tidings.device.voice.audio import AudioSink, AudioSource
from tidings.device.voice.commands import COMMAND_WORDS, match_command, recognize_command
from tidings.device.voice.compose import ReplyComposer
from tidings.device.voice.dialog import (
    Action,
    Arrived,
    Call,
    Compose,
    Dialog,
    Discard,
    Drafted,
    Heard,
    Pending,
    ReadSummary,
    Say,
    SendResult,
    State,
    SummaryRead,
)
from tidings.device.voice.stt import Transcript, WhisperStt, reply_prompt, words_prompt
from tidings.device.voice.tts import Tts
from tidings.device.voice.vad import Endpointer, Paused, SpeechStarted, Utterance

log = logging.getLogger("tidings")


@dataclass(frozen=True)
class Mark:
    """One moment on the loop's timeline (time.monotonic()), for logs and the benchmark."""

    at: float
    kind: str  # arrived, speech_end, heard, say, summary, readback, sent, notice, barge_in, error
    detail: str = ""


_CHECK = object()  # wake-up: new messages may be in the store
_END = object()  # the microphone's input ended


@dataclass(frozen=True)
class _Notice:
    text: str  # something the wearer must hear from outside the dialog (a reply that could not be sent)


class VoiceLoop:
    def __init__(self, *, store: Store, summarizer: Summarizer, composer: ReplyComposer, tts: Tts, stt: WhisperStt,
                 endpointer: Endpointer, source: AudioSource, sink: AudioSink, wearer: Wearer = Wearer(),
                 poll_seconds: float = 0.25, on_mark: Callable[[Mark], None] | None = None,
                 keep_examples: int = 500, prime_dictation: bool = True,
                 between_turns: Callable[[], object] = lambda: None) -> None:
        self.store, self.summarizer, self.composer = store, summarizer, composer
        self.tts, self.stt, self.endpointer = tts, stt, endpointer
        self.source, self.sink = source, sink
        self.wearer = wearer
        self.poll_seconds = poll_seconds
        self.on_mark = on_mark
        self.keep_examples = keep_examples  # retention limit of the on-device training examples
        self.prime_dictation = prime_dictation
        self.between_turns = between_turns  # idle work on the loop's thread (the engine's), e.g. an adapter swap
        self.dialog = Dialog()
        self.timeline: list[Mark] = []
        self._events: queue.Queue = queue.Queue()
        self._announced: dict[str, frozenset[str]] = {}
        self._edited: set[int] = set()  # drafts the wearer dictated again
        self._heard_summaries: dict[str, tuple[list[Message], str]] = {}
        # A transcript made while the endpointer waited out its hangover: (end, samples, prompt, transcript).
        self._ahead: tuple[float, int, str, Transcript] | None = None
        self._started = 0.0

    # -- running ------------------------------------------------------------------

    def messages_arrived(self) -> None:
        """Tell the loop that new messages are in the store (else it notices within `poll_seconds`)."""
        self._events.put(_CHECK)

    def notify(self, text: str) -> None:
        """Say `text` to the wearer soon, from any thread: the loop's own thread speaks it."""
        self._events.put(_Notice(text))

    def run(self) -> None:
        """Until the microphone's input ends; then let the last words play out."""
        self._started = time.monotonic()
        capture = threading.Thread(target=self._capture, name="tidings-capture", daemon=True)
        capture.start()
        self._check_messages()
        while True:
            try:
                item = self._events.get(timeout=self.poll_seconds)
            except queue.Empty:
                self.between_turns()
                self._check_messages()
                continue
            if item is _END:
                break
            if isinstance(item, Exception):
                self._mark("error", str(item))
                log.error("%s", item)
                self._perform(Say("The microphone stopped working. Your drafts are saved."))
                break
            if isinstance(item, Paused):
                self._recognize_ahead(item)
            elif isinstance(item, Utterance):
                self._on_utterance(item)
            elif isinstance(item, _Notice):
                self._speak(item.text, "notice")
            self._check_messages()
        self.sink.wait()

    def _capture(self) -> None:
        try:
            for chunk in self.source:
                for event in self.endpointer.push(chunk):
                    self._on_vad(event)
            for event in self.endpointer.flush():
                self._on_vad(event)
        except Exception as exc:  # reported by the loop's thread, which owns the speaker
            self._events.put(exc)
        finally:
            self._events.put(_END)

    def _on_vad(self, event: SpeechStarted | Paused | Utterance) -> None:
        if isinstance(event, SpeechStarted):
            if self.sink.playing:
                self.sink.stop()  # barge-in: the wearer talks, Tidings stops talking
                self._mark("barge_in")
            return
        if isinstance(event, Utterance):
            self._mark("speech_end", f"{event.end:.3f}")
        self._events.put(event)

    # -- events in ----------------------------------------------------------------

    def _check_messages(self) -> None:
        arrived: list[Pending] = []
        for thread in self.store.unread_threads():
            messages = self.store.unread_messages(thread)
            ids = frozenset(m.id for m in messages)
            others = [m for m in messages if not self.wearer.is_sender(m.sender)]
            if self._announced.get(thread) == ids or not others:
                continue
            self._announced[thread] = ids
            suspicious = len(suspicions(others)) == len(others)
            arrived.append(Pending(thread, tuple(dict.fromkeys(m.sender for m in others)), len(others), suspicious))
        if arrived:
            self._mark("arrived", ",".join(p.thread for p in arrived))
            self._handle(Arrived(tuple(arrived)))

    def _prompt(self, expecting_command: bool) -> str:
        """What recognition reads the utterance as following: the command words, or while dictating (with
        `prime_dictation`) the newest messages of the thread being answered, whose names, places and
        numbers a reply repeats and a small recognizer mishears."""
        if expecting_command:
            return words_prompt(COMMAND_WORDS)
        current = self.dialog.current
        if not self.prime_dictation or current is None:
            return ""
        return reply_prompt(self.store.recent_messages(current.thread))

    def _recognize_ahead(self, paused: Paused) -> None:
        """Recognize the utterance the wearer has probably finished while the endpointer still waits for
        more: most of the hangover is spent on recognition instead of after it. Wasted if they go on."""
        prompt = self._prompt(self.dialog.state is not State.DICTATING)
        try:
            self._ahead = (paused.end, len(paused.audio), prompt, self.stt.transcribe(paused.audio, prompt=prompt))
        except Exception as exc:  # the utterance itself is recognized again, and its failure reported then
            log.debug("early recognition failed: %s", exc)
            self._ahead = None

    def _on_utterance(self, utterance: Utterance) -> None:
        prompt = self._prompt(self.dialog.state is not State.DICTATING)
        ahead, self._ahead = self._ahead, None
        try:
            if ahead is not None and ahead[:3] == (utterance.end, len(utterance.audio), prompt):
                transcript = ahead[3]
            else:
                transcript = self.stt.transcribe(utterance.audio, prompt=prompt)
        except Exception as exc:  # the dialog is untouched: its state and draft wait for the wearer to try again
            log.error("speech recognition failed: %s", exc)
            self._mark("error", f"stt: {exc}")
            self._perform(Say("Sorry, I could not make that out. Please say it again."))
            return
        self._mark("heard", transcript.text)
        log.info("heard: %r", transcript.text)
        text = transcript.text
        if self.dialog.state is not State.DICTATING and match_command(text) is None:
            try:
                command = recognize_command(text, utterance.audio, self.stt, prompt=prompt)
            except Exception as exc:  # scoring is a second chance; without it the wearer is asked again
                log.error("command scoring failed: %s", exc)
                command = None
            if command is not None:
                log.info("heard %r as the command %r", text, command.value)
                self._mark("heard", f"{command.value} (scored)")
                text = command.value
        self._handle(Heard(text))

    # -- actions out ----------------------------------------------------------------

    def _handle(self, event) -> None:
        for action in self.dialog.handle(event):
            self._perform(action)

    def _perform(self, action: Action) -> None:
        match action:
            case Say(text, kind):
                self._speak(text, kind)
            case ReadSummary(thread):
                self._read_summary(thread)
            case Compose(thread, dictation, draft_id):
                self._learn_from_summary(thread)
                reply = self.composer.compose(dictation)
                log.info("reply from %s%s", reply.source, f" (model draft rejected: {reply.rejected})"
                         if reply.rejected else "")
                if draft_id is not None:
                    self._edited.add(draft_id)
                    draft = self.store.update_draft(draft_id, reply.text)
                else:
                    draft = self.store.add_draft(thread, reply.text)
                self._handle(Drafted(draft))
            case Discard(draft_id):
                self.store.discard_draft(draft_id)
            case Call(tool_call):
                try:
                    entry = send_reply(self.store, tool_call)
                except ToolError as exc:
                    log.error("%s", exc)
                    self._handle(SendResult(False, str(exc)))
                    return
                self._mark("sent", f"{entry.thread}: {entry.text}")
                outcome = "edited" if tool_call.draft_id in self._edited else "accepted"
                self.store.add_training_example("reply", entry.thread, self.store.recent_messages(entry.thread),
                                                entry.text, outcome, author=self.wearer.name, keep=self.keep_examples)
                self._handle(SendResult(True))

    def _read_summary(self, thread: str) -> None:
        messages = self.store.unread_messages(thread)
        if not messages:  # read already: say its last summary again
            records = self.store.summaries(thread)
            text = records[-1]["summary"] if records else "There is nothing new in this thread."
            self._speak(text, "summary")
            self._handle(SummaryRead(thread, text))
            return
        stream = self.summarizer.stream_summary(messages)
        for i, sentence in enumerate(stream):
            self._speak(sentence, "summary" if i == 0 else "")
        assert stream.outcome is not None
        record = self.summarizer.record(thread, messages, stream.outcome, with_suggestions=False)
        # Saved and marked read once spoken, in one transaction: it is never read out as new again.
        self.store.record_summary(thread, record.message_ids, record.to_json())
        if stream.outcome.source == "model":
            self._heard_summaries[thread] = (messages, stream.outcome.text)
        self._handle(SummaryRead(thread, stream.outcome.text))

    def _learn_from_summary(self, thread: str) -> None:
        """A model summary the wearer heard and then answered counts as accepted: kept for personalization.

        Only on this device, in the store's training examples, under their
        retention limit; federated rounds train on them and send only adapter
        updates.
        """
        if thread in self._heard_summaries:
            messages, text = self._heard_summaries.pop(thread)
            self.store.add_training_example("summary", thread, messages, text, "accepted", keep=self.keep_examples)

    def _speak(self, text: str, mark: str) -> None:
        for i, sentence in enumerate(sentences([text])):
            speech = self.tts.synthesize(sentence)
            self.sink.play(speech.audio, speech.sample_rate)
            if i == 0 and mark:
                self._mark(mark, text)

    def _mark(self, kind: str, detail: str = "") -> None:
        mark = Mark(time.monotonic(), kind, detail)
        self.timeline.append(mark)
        if self.on_mark:
            self.on_mark(mark)
