"""Confirmed replies from the outbox to their rooms, each exactly once.

A reply is sent with a transaction id made of the store's own id and the
outbox row, and the client-server API returns the first event for a
transaction id it has seen, instead of sending another. So a send that
reached the homeserver but not the store (a crash, a dropped connection) is
simply sent again: the room still gets one message, and the row is marked
delivered with the event id the homeserver gave it.

An unreachable homeserver is retried with backoff, for as long as it takes;
a refusal that no retry can change (the wearer left the room, the room does
not exist) ends the retries. The wearer hears about both, once.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass

from nio import AsyncClient, LocalProtocolError, RoomSendError, RoomSendResponse
from tidings.device.matrix.client import CONNECTION_ERRORS
from tidings.device.store import OutboxEntry, Store

log = logging.getLogger("tidings")
STORE_ID = "matrix.store_id"
# Errors that mean the room will not take this message however often it is sent.
PERMANENT = {"M_FORBIDDEN", "M_NOT_FOUND", "M_UNKNOWN", "M_BAD_JSON", "M_NOT_JSON", "M_TOO_LARGE",
             "M_INVALID_PARAM"}


@dataclass(frozen=True)
class Delivery:
    """One attempt to deliver one reply."""

    entry: OutboxEntry  # as it is after the attempt
    delivered: bool
    error: str = ""
    permanent: bool = False


def transaction_id(store: Store, entry: OutboxEntry) -> str:
    """Stable across restarts, and never the same for two replies, even from two stores on one login."""
    store_id = store.connector_state(STORE_ID)
    if store_id is None:
        store_id = uuid.uuid4().hex
        store.set_connector_state(STORE_ID, store_id)
    return f"tidings.{store_id}.{entry.id}"


async def deliver(client: AsyncClient, store: Store, entry: OutboxEntry, *, rooms_known: bool = True) -> Delivery:
    """Send one reply; `rooms_known`: the client has synced, so a room it does not know is not the wearer's."""
    txn = transaction_id(store, entry)
    room = client.rooms.get(entry.thread)
    if room is not None and room.encrypted and client.olm is None:
        # Sent anyway, the reply would go out in plain text into a conversation its members believe private.
        return _failed(store, entry, "the conversation is end-to-end encrypted and encryption is off on this "
                       "device ([matrix] encryption)", permanent=True)
    try:
        reply = await client.room_send(entry.thread, "m.room.message", {"msgtype": "m.text", "body": entry.text},
                                       tx_id=txn, ignore_unverified_devices=True)
    except CONNECTION_ERRORS as exc:
        return _failed(store, entry, f"cannot reach the homeserver ({exc.__class__.__name__})", permanent=False)
    except LocalProtocolError as exc:  # nio's "no such room", with encryption on
        return _failed(store, entry, str(exc), permanent=rooms_known)
    if isinstance(reply, RoomSendResponse):
        store.mark_delivered(entry.id, reply.event_id)
        log.info("delivered outbox entry %d to %s as %s", entry.id, entry.thread, reply.event_id)
        return Delivery(store.outbox_entry(entry.id), True)
    assert isinstance(reply, RoomSendError)
    status = str(reply.status_code or "")
    return _failed(store, entry, f"{status or 'error'}: {reply.message}", permanent=status in PERMANENT)


def _failed(store: Store, entry: OutboxEntry, error: str, *, permanent: bool) -> Delivery:
    after = store.mark_delivery_failed(entry.id, error, permanent=permanent)
    log.warning("outbox entry %d to %s not delivered (attempt %d%s): %s", entry.id, entry.thread, after.attempts,
                ", giving up" if permanent else ", will retry", error)
    return Delivery(after, False, error, permanent)


def backoff_seconds(first: float, most: float, failures: int) -> float:
    """How long to wait after the `failures`-th failure in a row: `first`, doubling up to `most`."""
    return min(most, first * 2 ** max(0, failures - 1))


class Backoff:
    """When each undelivered reply may be tried again: `first` seconds after a failure, doubling to `most`."""

    def __init__(self, first: float, most: float) -> None:
        self.first, self.most = first, most
        self._next: dict[int, float] = {}

    def due(self, entry: OutboxEntry, now: float | None = None) -> bool:
        return self._next.get(entry.id, 0.0) <= (time.monotonic() if now is None else now)

    def failed(self, entry: OutboxEntry, now: float | None = None) -> float:
        wait = backoff_seconds(self.first, self.most, entry.attempts)
        self._next[entry.id] = (time.monotonic() if now is None else now) + wait
        return wait


def notice(delivery: Delivery, to: str) -> str | None:
    """What the wearer hears about an attempt: the first failure, a final refusal, a success after failing."""
    if delivery.delivered:
        return f"Your reply to {to} is sent now." if delivery.entry.attempts > 1 else None
    if delivery.permanent:
        return f"I couldn't send your reply to {to}: {_why(delivery.error)}"
    if delivery.entry.attempts == 1:
        return f"I couldn't send your reply to {to} yet; I'll keep trying."
    return None


def _why(error: str) -> str:
    if error.startswith("M_FORBIDDEN"):
        return "you are not in that conversation any more."
    if error.startswith(("M_NOT_FOUND", "M_UNKNOWN")) or "No such room" in error:
        return "that conversation no longer exists."
    if "encryption is off" in error:
        return "the conversation is encrypted and encryption is off on this device."
    return "the server refused it."
