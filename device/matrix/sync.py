"""One sync with the homeserver, into the store, in one transaction.

    homeserver ─ /sync since token ─▶ room timelines ─▶ messages ─┐
                                       (gap? /messages back to the token)  ├─▶ store: messages + next token
                                       redactions ─▶ ids to remove ────────┘   (one transaction)

The token is the position the stored messages reach. It is committed with
them, so a crash before the commit repeats the sync (and event ids make the
repeat store nothing twice) and a crash after it has nothing left to do.
The first sync of a new device stores what it finds as history: read, never
announced, there so later summaries have the context.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from nio import (
    AsyncClient,
    MegolmEvent,
    RedactionEvent,
    RoomMessagesError,
    SyncError,
)
from tidings.device.matrix.events import Skipped, to_message
from tidings.device.messages import Message
from tidings.device.store import Store
from tidings.device.summary.wearer import Wearer

log = logging.getLogger("tidings")
CONNECTOR = "matrix"
SINCE = "matrix.since"
# Events per room per sync; a longer gap is filled from /messages.
SYNC_FILTER = {"room": {"timeline": {"limit": 50}}, "presence": {"types": []}}
BACKFILL_PAGE = 100


class SyncFailed(RuntimeError):
    def __init__(self, message: str, status: str = "") -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class SyncReport:
    added: int
    duplicates: int
    removed: int
    history: bool  # the device's first sync: stored as read
    skipped: tuple[Skipped, ...] = field(default=())


async def sync_once(client: AsyncClient, store: Store, wearer: Wearer, *, timeout_ms: int = 30000,
                    full_state: bool = False) -> SyncReport:
    """Wait up to `timeout_ms` for news, store it with the new token; raise SyncFailed if the server says no.

    `full_state` fetches every room's state again (names, members): needed on
    the first sync of a process, whose client knows no rooms yet."""
    since = store.connector_state(SINCE)
    reply = await client.sync(timeout=timeout_ms if since else 0, since=since, full_state=full_state or None,
                              sync_filter=SYNC_FILTER)
    if isinstance(reply, SyncError):
        raise SyncFailed(f"the homeserver refused to sync: {reply.message}", reply.status_code or "")
    messages: list[Message] = []
    removed: list[str] = []
    skipped: list[Skipped] = []
    titles: dict[str, str] = {}
    own: list[str] = []  # the wearer's messages, sent from another app or delivered by Tidings
    for room_id, info in reply.rooms.join.items():
        room = client.rooms.get(room_id)
        title = room.display_name if room else room_id
        titles[room_id] = title
        events = list(info.timeline.events)
        if since and info.timeline.limited and info.timeline.prev_batch:
            events = await _backfill(client, room_id, info.timeline.prev_batch, since) + events
        for event in events:
            if isinstance(event, RedactionEvent):
                removed.append(event.redacts)
                log.info("a message in %s was deleted by its sender (%s): removed from the store", title,
                         event.redacts)
                continue
            if isinstance(event, MegolmEvent):
                skipped.append(Skipped(event.event_id, "encrypted, and this device has no key for it"))
                continue
            source = getattr(event, "source", None)
            if not isinstance(source, dict) or source.get("type") != "m.room.message":
                continue
            item = to_message(source, room_id=room_id, sender_name=_sender_name(client, room, event.sender, wearer))
            if isinstance(item, Skipped):
                skipped.append(item)
                continue
            messages.append(item)
            if event.sender == client.user_id:
                own.append(item.id)
    for room_id in reply.rooms.invite:
        log.info("invited to room %s: Tidings does not join rooms by itself; accept the invite in another "
                 "Matrix app", room_id)
    for item in skipped:
        log.info("not stored: event %s: %s", item.event_id, item.reason)
    report = store.add_synced(messages, state={SINCE: reply.next_batch}, titles=titles, connector=CONNECTOR,
                              history=since is None, removed=removed, read_through=own)
    return SyncReport(report.added, report.duplicates, len(removed), since is None, tuple(skipped))


def _sender_name(client: AsyncClient, room, user_id: str, wearer: Wearer) -> str:
    """The name the wearer knows a sender by; the wearer's own messages under the wearer's name."""
    if user_id == client.user_id and wearer.name:
        return wearer.name
    name = room.user_name(user_id) if room else None
    return name or user_id.lstrip("@").split(":", 1)[0]


async def _backfill(client: AsyncClient, room_id: str, start: str, until: str) -> list:
    """The events between the stored token and a limited timeline's start, oldest first."""
    pages: list[list] = []
    token = start
    while True:
        reply = await client.room_messages(room_id, start=token, end=until, limit=BACKFILL_PAGE)
        if isinstance(reply, RoomMessagesError):
            raise SyncFailed(f"could not fetch the earlier messages of {room_id}: {reply.message}",
                             reply.status_code or "")
        if not reply.chunk:
            break
        pages.append(reply.chunk[::-1])
        if not reply.end or reply.end == token:
            break
        token = reply.end
    return [event for page in reversed(pages) for event in page]
