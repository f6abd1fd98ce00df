"""One Matrix room event as one stored message, or the reason it is not one.

Works on the event as the client-server API sends it (a dict), so it does not
depend on how a client library models events. Text, notices and emotes keep
their words; attachments become the words the verbatim reader says for them
("<photo>", "<file invoice.pdf>"); a reply's quoted fallback is dropped, since
the quoted message is in the thread already.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from tidings.device.messages import Message, parse_message

_ATTACHMENTS = {"m.image": "photo", "m.video": "video", "m.audio": "voice message", "m.location": "location"}
# A reply's body starts with the quoted message: "> <@mom:example.org> Can you ...\n> more\n\n".
_REPLY_FALLBACK = re.compile(r"\A(?:>[^\n]*\n)+\n")


@dataclass(frozen=True)
class Skipped:
    """An event that is not stored, and why (for the log; the text never goes there)."""

    event_id: str
    reason: str


def message_text(content: dict[str, Any], sender_name: str) -> str | None:
    """What a message says, for the summarizer and for reading aloud; None for what is not a message."""
    msgtype = content.get("msgtype")
    body = content.get("body")
    if not isinstance(body, str):
        return None
    if msgtype in ("m.text", "m.notice"):
        if "m.relates_to" in content and "m.in_reply_to" in content.get("m.relates_to", {}):
            body = _REPLY_FALLBACK.sub("", body, count=1)
        return body.strip() or None
    if msgtype == "m.emote":
        return f"{sender_name} {body.strip()}"
    if msgtype in _ATTACHMENTS:
        # Since Matrix 1.10 a body beside a different `filename` is the sender's caption.
        caption = body.strip() if content.get("filename") and content["filename"] != body else ""
        return f"<{_ATTACHMENTS[msgtype]}>" + (f" {caption}" if caption else "")
    if msgtype == "m.file":
        name = content.get("filename") or body
        return f"<file {name.strip()[:80]}>" if name.strip() else "<file>"
    return None


def to_message(event: dict[str, Any], *, room_id: str, sender_name: str) -> Message | Skipped:
    """An `m.room.message` event as a stored message in the room's thread."""
    event_id = event.get("event_id", "")
    if event.get("type") != "m.room.message":
        return Skipped(event_id, f"not a message ({event.get('type')})")
    content = event.get("content") or {}
    if not content:
        return Skipped(event_id, "deleted by its sender")
    if content.get("m.relates_to", {}).get("rel_type") == "m.replace":
        return Skipped(event_id, "an edit of an earlier message")
    text = message_text(content, sender_name)
    if text is None:
        return Skipped(event_id, f"no text to read (msgtype {content.get('msgtype')!r})")
    sent_at = datetime.fromtimestamp(event.get("origin_server_ts", 0) / 1000, timezone.utc)
    record = {"id": event_id, "thread": room_id, "sender": sender_name, "text": text,
              "sent_at": sent_at.isoformat(), "matrix_sender": event.get("sender", "")}
    try:
        return parse_message(record)
    except ValueError as exc:  # the same rules as every other source: an empty id, an oversized text
        return Skipped(event_id, str(exc))
