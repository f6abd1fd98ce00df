"""The one action with an effect outside the device: `send_reply(thread, text)`.

A tool call is never parsed from model output or from message text. The voice
dialog builds it, in code, only when the wearer says "send" right after hearing
the draft read back; this module then checks it against its JSON schema and
against the store (the thread exists, the text is exactly the open draft the
wearer heard) before the draft moves to the outbox.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jsonschema
from tidings.device.store import OutboxEntry, Store

MAX_REPLY_CHARS = 2000

SEND_REPLY_SCHEMA: dict[str, Any] = {
    "name": "send_reply",
    "description": "Queue the wearer's confirmed reply to a thread in the outbox.",
    "parameters": {
        "type": "object",
        "properties": {
            "thread": {"type": "string", "minLength": 1},
            "text": {"type": "string", "minLength": 1, "maxLength": MAX_REPLY_CHARS, "pattern": r"\S"},
        },
        "required": ["thread", "text"],
        "additionalProperties": False,
    },
}
TOOLS = {SEND_REPLY_SCHEMA["name"]: SEND_REPLY_SCHEMA}


class ToolError(ValueError):
    """A tool call that does not match its schema or the store; nothing was done."""


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]
    draft_id: int  # the draft the wearer heard and confirmed


def validate(call: ToolCall) -> None:
    schema = TOOLS.get(call.name)
    if schema is None:
        raise ToolError(f"unknown tool {call.name!r}; known: {', '.join(TOOLS)}")
    try:
        jsonschema.validate(call.arguments, schema["parameters"])
    except jsonschema.ValidationError as exc:
        raise ToolError(f"{call.name}: {exc.message}") from None


def send_reply(store: Store, call: ToolCall) -> OutboxEntry:
    """Validate the call, then queue its draft in the outbox (once)."""
    validate(call)
    thread, text = call.arguments["thread"], call.arguments["text"]
    if not store.has_thread(thread):
        raise ToolError(f"send_reply: no thread {thread!r} on this device")
    try:
        draft = store.draft(call.draft_id)
    except KeyError:
        raise ToolError(f"send_reply: no draft {call.draft_id}") from None
    if draft.status != "open" or draft.thread != thread or draft.text != text:
        raise ToolError(f"send_reply: draft {call.draft_id} is not the open draft for {thread!r} with this text")
    return store.queue_draft(call.draft_id)
