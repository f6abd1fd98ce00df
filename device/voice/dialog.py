"""The wearer's conversation with Tidings: a small state machine, events in, actions out.

    IDLE --messages arrive--> ANNOUNCED --"reply"--> DICTATING --speech--> CONFIRMING --"send"--> ANNOUNCED
                               "read" speaks the summary        "cancel" discards, "edit" dictates again

It has no audio, model or store: the voice loop turns the wearer's speech into
`Heard` events and carries out the actions. That keeps every rule about sending
in this one file. The only action with an effect outside the device, the
`send_reply` tool call, is built here and only here: in CONFIRMING, on the
wearer's own "send", for the draft they just heard read back. Message text
never becomes an event, so nothing a message says can trigger it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from tidings.device.store import Draft
from tidings.device.tools import ToolCall
from tidings.device.voice.commands import Command, match_command


class State(Enum):
    IDLE = "idle"  # nothing to talk about
    ANNOUNCED = "announced"  # a thread is current: read it, reply to it, or move on
    DICTATING = "dictating"  # the next utterance is the reply's text
    CONFIRMING = "confirming"  # a draft was read back: send, edit or cancel


@dataclass(frozen=True)
class Pending:
    """A thread with unread messages, as announced."""

    thread: str
    senders: tuple[str, ...]
    count: int
    # Every one of them looks like a scam or an injected instruction (summary.untrusted).
    suspicious: bool = False


# -- events ---------------------------------------------------------------------


@dataclass(frozen=True)
class Arrived:
    threads: tuple[Pending, ...]


@dataclass(frozen=True)
class Heard:
    text: str  # what the wearer said, transcribed


@dataclass(frozen=True)
class SummaryRead:
    thread: str
    text: str  # what was spoken, so "repeat" can say it again


@dataclass(frozen=True)
class Drafted:
    draft: Draft  # the reply composed from the dictation, saved in the store


@dataclass(frozen=True)
class SendResult:
    ok: bool
    detail: str = ""


Event = Arrived | Heard | SummaryRead | Drafted | SendResult

# -- actions --------------------------------------------------------------------


@dataclass(frozen=True)
class Say:
    text: str
    kind: str = "say"  # "readback" when it reads a draft back


@dataclass(frozen=True)
class ReadSummary:
    thread: str


@dataclass(frozen=True)
class Compose:
    thread: str
    dictation: str
    draft_id: int | None  # the draft to replace ("edit"), or None for a new one


@dataclass(frozen=True)
class Discard:
    draft_id: int


@dataclass(frozen=True)
class Call:
    tool_call: ToolCall


Action = Say | ReadSummary | Compose | Discard | Call

HELP = {
    State.IDLE: "No new messages.",
    State.ANNOUNCED: "Say read, reply, repeat, or next.",
    State.DICTATING: "Say your reply, or cancel.",
    State.CONFIRMING: "Say send, edit, or cancel.",
}
_NUMBERS = "zero one two three four five six seven eight nine ten".split()


def _spoken_count(n: int) -> str:
    return _NUMBERS[n] if n < len(_NUMBERS) else str(n)


def _names(names: tuple[str, ...]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def announcement(pending: Pending, waiting: int = 0) -> str:
    count = _spoken_count(pending.count)
    plural = pending.count != 1
    text = f"{count.capitalize()} new message{'s' if plural else ''} from {_names(pending.senders)}"
    text += f", which look{'' if plural else 's'} like a scam." if pending.suspicious else "."
    if waiting:
        text += f" {_spoken_count(waiting).capitalize()} more thread{'s' if waiting != 1 else ''} waiting."
    return text


@dataclass
class Dialog:
    state: State = State.IDLE
    current: Pending | None = None
    queue: list[Pending] = field(default_factory=list)
    draft: Draft | None = None
    last_said: str = ""

    def handle(self, event: Event) -> list[Action]:
        match event:
            case Arrived(threads):
                return self._arrived(threads)
            case Heard(text):
                return self._heard(text)
            case SummaryRead(_, text):
                self.last_said = text
                return []
            case Drafted(draft):
                self.draft = draft
                self.state = State.CONFIRMING
                return self._say(self._readback(), "readback")
            case SendResult(ok, detail):
                if not ok:
                    return self._say(f"Not sent: {detail}. {HELP[State.CONFIRMING]}")
                self.draft = None
                self.state = State.ANNOUNCED
                return self._say("Sent.")
        raise TypeError(f"not a dialog event: {event!r}")

    # -- arrivals -------------------------------------------------------------

    def _arrived(self, threads: tuple[Pending, ...]) -> list[Action]:
        for pending in threads:
            known = [p for p in self.queue if p.thread == pending.thread]
            if self.current is not None and self.current.thread == pending.thread:
                self.current = pending
            elif known:
                self.queue[self.queue.index(known[0])] = pending
            else:
                self.queue.append(pending)
        if self.state is State.IDLE and self.queue:
            return self._advance()
        # Never talk over dictation or a read-back; the queue is announced on "next".
        return []

    def _advance(self, prefix: str = "") -> list[Action]:
        if not self.queue:
            self.current = None
            self.state = State.IDLE
            return self._say(f"{prefix}That's all for now.".strip())
        self.current = self.queue.pop(0)
        self.state = State.ANNOUNCED
        return self._say(f"{prefix}{announcement(self.current, len(self.queue))}".strip())

    # -- the wearer's speech ----------------------------------------------------

    def _heard(self, text: str) -> list[Action]:
        command = match_command(text)
        if self.state is State.DICTATING:
            return self._dictation(text, command)
        if command is None:
            return self._say(f"Sorry, I didn't catch that. {HELP[self.state]}")
        if command is Command.REPEAT:
            return self._say(self.last_said or HELP[self.state])
        if self.state is State.IDLE:
            return self._say(HELP[State.IDLE])
        if self.state is State.ANNOUNCED:
            return self._announced(command)
        return self._confirming(command)

    def _announced(self, command: Command) -> list[Action]:
        assert self.current is not None
        if command is Command.READ:
            return [ReadSummary(self.current.thread)]
        if command is Command.REPLY:
            self.state = State.DICTATING
            return self._say("Go ahead.")
        if command in (Command.NEXT, Command.SKIP):
            return self._advance()
        if command is Command.CANCEL:
            return self._say("Okay.")
        return self._say(f"There is no reply yet. {HELP[State.ANNOUNCED]}")  # send, edit

    def _dictation(self, text: str, command: Command | None) -> list[Action]:
        assert self.current is not None
        if command is Command.CANCEL:
            actions: list[Action] = [Discard(self.draft.id)] if self.draft else []
            self.draft = None
            self.state = State.ANNOUNCED
            return actions + self._say("Reply cancelled.")
        if not text.strip():
            return self._say(HELP[State.DICTATING])
        return [Compose(self.current.thread, text.strip(), self.draft.id if self.draft else None)]

    def _confirming(self, command: Command) -> list[Action]:
        assert self.current is not None and self.draft is not None
        if command is Command.SEND:
            call = ToolCall("send_reply", {"thread": self.draft.thread, "text": self.draft.text}, self.draft.id)
            return [Call(call)]
        if command in (Command.EDIT, Command.REPLY):
            self.state = State.DICTATING
            return self._say("Say the new reply.")
        if command is Command.CANCEL:
            discarded = self.draft
            self.draft = None
            self.state = State.ANNOUNCED
            return [Discard(discarded.id)] + self._say("Reply discarded.")
        if command is Command.READ:
            return [ReadSummary(self.current.thread)]
        # next / skip: the draft stays open in the store, nothing is lost.
        self.draft = None
        return self._advance("Draft kept. ")

    # -- speech -----------------------------------------------------------------

    def _readback(self) -> str:
        assert self.draft is not None and self.current is not None
        to = _names(self.current.senders) if self.current.thread == self.draft.thread else self.draft.thread
        return f"Your reply to {to}: {self.draft.text} {HELP[State.CONFIRMING]}"

    def _say(self, text: str, kind: str = "say") -> list[Action]:
        self.last_said = text
        return [Say(text, kind)]
