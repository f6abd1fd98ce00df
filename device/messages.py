"""The message interchange format: one JSON object per line.

    {"id": str, "thread": str, "sender": str, "text": str, "sent_at": ISO-8601}

Extra fields are allowed and kept verbatim in ``Message.extra``. Parsing never
raises on a bad line: it yields a ``MessageError`` naming the line and the
problem, so one malformed message cannot cost the messages around it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

REQUIRED_FIELDS = ("id", "thread", "sender", "text", "sent_at")
MAX_TEXT_CHARS = 1_000_000


@dataclass(frozen=True)
class Message:
    id: str
    thread: str
    sender: str
    text: str
    sent_at: datetime
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.extra,
            "id": self.id,
            "thread": self.thread,
            "sender": self.sender,
            "text": self.text,
            "sent_at": self.sent_at.isoformat(),
        }


@dataclass(frozen=True)
class MessageError:
    """Why one input line was rejected; ``line`` is 1-based."""

    line: int
    reason: str
    raw: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


def parse_timestamp(value: str) -> datetime:
    """ISO-8601, with 'Z' accepted; a naive time is taken as UTC."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def parse_message(obj: Any) -> Message:
    """Validate one decoded JSON value; raises ValueError with a readable reason."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    missing = [name for name in REQUIRED_FIELDS if name not in obj]
    if missing:
        raise ValueError(f"missing field(s): {', '.join(missing)}")
    for name in REQUIRED_FIELDS:
        if not isinstance(obj[name], str):
            raise ValueError(f"field {name!r} must be a string, got {type(obj[name]).__name__}")
    for name in REQUIRED_FIELDS:
        try:
            obj[name].encode("utf-8")
        except UnicodeEncodeError:
            # JSON escapes can smuggle in lone surrogates, which no store can keep.
            raise ValueError(f"field {name!r} holds an unpaired surrogate, not valid Unicode") from None
    for name in ("id", "thread", "sender"):
        if not obj[name].strip():
            raise ValueError(f"field {name!r} is empty")
    if len(obj["text"]) > MAX_TEXT_CHARS:
        raise ValueError(f"text is {len(obj['text']):,} characters; the limit is {MAX_TEXT_CHARS:,}")
    try:
        sent_at = parse_timestamp(obj["sent_at"])
    except ValueError:
        raise ValueError(f"sent_at {obj['sent_at']!r} is not an ISO-8601 time") from None
    extra = {k: v for k, v in obj.items() if k not in REQUIRED_FIELDS}
    return Message(obj["id"], obj["thread"], obj["sender"], obj["text"], sent_at, extra)


def parse_lines(lines: Iterable[bytes | str]) -> Iterator[Message | MessageError]:
    """Parse JSON lines; blank lines are skipped, bad ones reported in place."""
    for number, raw in enumerate(lines, start=1):
        if isinstance(raw, bytes):
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield MessageError(number, f"not valid UTF-8 ({exc.reason} at byte {exc.start})",
                                   raw.decode("utf-8", "replace"))
                continue
        if not raw.strip():
            continue
        try:
            yield parse_message(json.loads(raw))
        except json.JSONDecodeError as exc:
            yield MessageError(number, f"malformed JSON: {exc.msg} at column {exc.colno}", raw)
        except ValueError as exc:
            yield MessageError(number, str(exc), raw)
