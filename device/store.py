"""The device's local store: messages, read state, summaries, drafts, outbox, connector state.

SQLite in WAL mode with synchronous=FULL: a committed transaction survives a
crash or power loss. Each step that must not happen twice commits together
with its effect: a summary is written, its messages marked read and the
summary marked announced in one transaction, before the summary is shown, so
a restart never announces it again. Message ids are primary keys, so feeding
the same messages twice stores them once. A messenger connector's sync
position is committed with the messages it delivered, and an outbox row is
marked delivered with the id the messenger gave it, so neither a crash nor a
resync loses or doubles a message.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tidings.device.messages import Message, MessageError, parse_timestamp

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    thread     TEXT NOT NULL,
    sender     TEXT NOT NULL,
    text       TEXT NOT NULL,
    sent_at    TEXT NOT NULL,
    sent_utc   TEXT NOT NULL,
    extra      TEXT NOT NULL,
    received_at TEXT NOT NULL,
    read_at    TEXT
);
CREATE INDEX IF NOT EXISTS messages_unread ON messages(thread) WHERE read_at IS NULL;
CREATE TABLE IF NOT EXISTS rejected_lines (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    origin     TEXT NOT NULL,
    line       INTEGER NOT NULL,
    reason     TEXT NOT NULL,
    raw        TEXT NOT NULL,
    received_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS summaries (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    thread      TEXT NOT NULL,
    record      TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS drafts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    thread      TEXT NOT NULL,
    text        TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('open', 'queued', 'discarded')),
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
-- What the wearer accepted or edited, with the messages it came from: the only
-- training data of federated personalization. It never leaves the device
-- (only adapter updates do) and is trimmed to a retention limit.
CREATE TABLE IF NOT EXISTS training_examples (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL CHECK (kind IN ('summary', 'reply')),
    thread      TEXT NOT NULL,
    source      TEXT NOT NULL,
    author      TEXT NOT NULL,
    output      TEXT NOT NULL,
    outcome     TEXT NOT NULL CHECK (outcome IN ('accepted', 'edited')),
    created_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    thread      TEXT NOT NULL,
    text        TEXT NOT NULL,
    draft_id    INTEGER REFERENCES drafts(id),
    queued_at   TEXT NOT NULL,
    sent_at     TEXT
);
-- Threads a connector brings in: what to call them aloud, and which connector delivers replies to them.
CREATE TABLE IF NOT EXISTS threads (
    thread      TEXT PRIMARY KEY,
    title       TEXT NOT NULL,
    connector   TEXT NOT NULL
);
-- Each connector's position in its messenger (a Matrix sync token, a receipt sent).
CREATE TABLE IF NOT EXISTS connector_state (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL
);
"""

# Columns added after the first release, for stores created before them.
_ADDED_COLUMNS = {
    "outbox": {
        "remote_id": "TEXT",            # the messenger's id of the delivered message
        "attempts": "INTEGER NOT NULL DEFAULT 0",
        "last_error": "TEXT",
        "failed_at": "TEXT",            # delivery refused for good (not a member of the room, ...)
    },
}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


@dataclass(frozen=True)
class IngestReport:
    added: int
    duplicates: int
    errors: tuple[MessageError, ...]


@dataclass(frozen=True)
class Draft:
    id: int
    thread: str
    text: str
    status: str


@dataclass(frozen=True)
class OutboxEntry:
    id: int
    thread: str
    text: str
    draft_id: int | None
    queued_at: str
    sent_at: str | None = None  # delivered to the messenger, as `remote_id`
    remote_id: str | None = None
    attempts: int = 0
    last_error: str | None = None
    failed_at: str | None = None  # given up: the messenger refused it for good

    @property
    def pending(self) -> bool:
        return self.sent_at is None and self.failed_at is None


_OUTBOX_COLUMNS = "id, thread, text, draft_id, queued_at, sent_at, remote_id, attempts, last_error, failed_at"


@dataclass(frozen=True)
class TrainingExample:
    """A summary or reply the wearer accepted or edited, and the messages it answers."""

    id: int
    kind: str  # "summary" or "reply"
    thread: str
    messages: tuple[Message, ...]
    author: str  # who the reply is written as; "" for summaries
    output: str
    outcome: str  # "accepted" or "edited"
    created_at: str


class Store:
    def __init__(self, path: Path | str) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: transactions are explicit, in `transaction()`.
        self.db = sqlite3.connect(path, isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(SCHEMA)
        self._add_missing_columns()
        self.path = path

    def _add_missing_columns(self) -> None:
        for table, columns in _ADDED_COLUMNS.items():
            present = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
            for name, kind in columns.items():
                if name not in present:
                    self.db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- messages -------------------------------------------------------------

    def add(self, items: Iterable[Message | MessageError], origin: str, batch: int = 500) -> IngestReport:
        """Store parsed messages (ignoring ids already stored) and keep rejected lines for inspection."""
        added = duplicates = 0
        errors: list[MessageError] = []
        pending: list[Message | MessageError] = []

        def flush() -> None:
            nonlocal added, duplicates
            with self.transaction() as db:
                for item in pending:
                    if isinstance(item, MessageError):
                        db.execute(
                            "INSERT INTO rejected_lines (origin, line, reason, raw, received_at) VALUES (?,?,?,?,?)",
                            (origin, item.line, item.reason, item.raw, _now()),
                        )
                    elif _insert_message(db, item, read=False):
                        added += 1
                    else:
                        duplicates += 1
            pending.clear()

        for item in items:
            if isinstance(item, MessageError):
                errors.append(item)
            pending.append(item)
            if len(pending) >= batch:
                flush()
        if pending:
            flush()
        return IngestReport(added, duplicates, tuple(errors))

    def add_synced(self, messages: Sequence[Message], *, state: dict[str, str], titles: dict[str, str] | None = None,
                   connector: str, history: bool = False, removed: Sequence[str] = (),
                   read_through: Sequence[str] = ()) -> IngestReport:
        """One connector sync, in one transaction: its messages, its new position (`state`), its threads'
        titles, and the ids its senders deleted. A crash before the commit leaves the old position, so the
        next sync delivers the same messages again and their ids make that harmless. `history`: messages
        from before the device connected, stored as read (context for summaries, never announced).
        `read_through`: messages the wearer wrote elsewhere; they and what came before them in their
        thread count as read, as they do in the wearer's other apps."""
        added = duplicates = 0
        with self.transaction() as db:
            for message in messages:
                if _insert_message(db, message, read=history):
                    added += 1
                else:
                    duplicates += 1
            now = _now()
            db.executemany("UPDATE messages SET read_at = ? WHERE read_at IS NULL AND thread ="
                           " (SELECT thread FROM messages WHERE id = ?) AND seq <= (SELECT seq FROM messages"
                           " WHERE id = ?)", [(now, mid, mid) for mid in read_through])
            db.executemany("DELETE FROM messages WHERE id = ?", [(mid,) for mid in removed])
            db.executemany("INSERT INTO threads (thread, title, connector) VALUES (?,?,?)"
                           " ON CONFLICT(thread) DO UPDATE SET title = excluded.title",
                           [(thread, title, connector) for thread, title in (titles or {}).items()])
            db.executemany("INSERT INTO connector_state (key, value) VALUES (?,?)"
                           " ON CONFLICT(key) DO UPDATE SET value = excluded.value", list(state.items()))
        return IngestReport(added, duplicates, ())

    def connector_state(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM connector_state WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_connector_state(self, key: str, value: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO connector_state (key, value) VALUES (?,?)"
                       " ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    def thread_title(self, thread: str) -> str:
        """What to call a thread aloud: its messenger's name for it, else its id."""
        row = self.db.execute("SELECT title FROM threads WHERE thread = ?", (thread,)).fetchone()
        return row[0] if row else thread

    def connector_threads(self, connector: str) -> set[str]:
        return {t for (t,) in self.db.execute("SELECT thread FROM threads WHERE connector = ?", (connector,))}

    def newest_read(self, connector: str) -> dict[str, str]:
        """Per thread of the connector, the id of the newest message the wearer has heard (for read receipts)."""
        rows = self.db.execute(
            "SELECT thread, id FROM (SELECT thread, id, row_number() OVER (PARTITION BY thread"
            " ORDER BY sent_utc DESC, seq DESC) AS newest FROM messages WHERE read_at IS NOT NULL"
            " AND thread IN (SELECT thread FROM threads WHERE connector = ?)) WHERE newest = 1", (connector,))
        return dict(rows.fetchall())

    def connector_states(self, prefix: str) -> dict[str, str]:
        """Every connector state whose key starts with `prefix`, by the rest of the key."""
        rows = self.db.execute("SELECT key, value FROM connector_state WHERE substr(key, 1, ?) = ?",
                               (len(prefix), prefix))
        return {key[len(prefix):]: value for key, value in rows}

    def message_count(self) -> int:
        return self.db.execute("SELECT count(*) FROM messages").fetchone()[0]

    def has_thread(self, thread: str) -> bool:
        return self.db.execute("SELECT 1 FROM messages WHERE thread = ? LIMIT 1", (thread,)).fetchone() is not None

    def unread_threads(self) -> list[str]:
        """Threads with unread messages, the one waiting longest first."""
        rows = self.db.execute(
            "SELECT thread FROM messages WHERE read_at IS NULL GROUP BY thread ORDER BY min(sent_utc), min(seq)"
        )
        return [thread for (thread,) in rows]

    def unread_messages(self, thread: str) -> list[Message]:
        rows = self.db.execute(
            "SELECT id, thread, sender, text, sent_at, extra FROM messages"
            " WHERE thread = ? AND read_at IS NULL ORDER BY sent_utc, seq",
            (thread,),
        )
        return [_message(row) for row in rows]

    def recent_messages(self, thread: str, limit: int = 20) -> list[Message]:
        """The thread's newest `limit` messages, read or not, oldest first."""
        rows = self.db.execute(
            "SELECT id, thread, sender, text, sent_at, extra FROM messages"
            " WHERE thread = ? ORDER BY sent_utc DESC, seq DESC LIMIT ?",
            (thread, limit),
        )
        return [_message(row) for row in rows][::-1]

    def rejected_lines(self) -> list[tuple[str, int, str]]:
        return list(self.db.execute("SELECT origin, line, reason FROM rejected_lines ORDER BY id"))

    # -- summaries ------------------------------------------------------------

    def record_summary(self, thread: str, message_ids: Sequence[str], record: dict) -> int:
        """Save a summary and mark its messages read, atomically: announce it only after this returns."""
        with self.transaction() as db:
            now = _now()
            db.executemany(
                "UPDATE messages SET read_at = ? WHERE id = ? AND read_at IS NULL",
                [(now, mid) for mid in message_ids],
            )
            cursor = db.execute(
                "INSERT INTO summaries (thread, record, created_at) VALUES (?,?,?)",
                (thread, json.dumps(record, ensure_ascii=False), now),
            )
            return cursor.lastrowid

    def summaries(self, thread: str | None = None) -> list[dict]:
        query = "SELECT record FROM summaries" + (" WHERE thread = ?" if thread else "") + " ORDER BY id"
        return [json.loads(r) for (r,) in self.db.execute(query, (thread,) if thread else ())]

    # -- drafts and outbox ----------------------------------------------------

    def add_draft(self, thread: str, text: str) -> Draft:
        now = _now()
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT INTO drafts (thread, text, status, created_at, updated_at) VALUES (?,?,'open',?,?)",
                (thread, text, now, now),
            )
        return Draft(cursor.lastrowid, thread, text, "open")

    def update_draft(self, draft_id: int, text: str) -> Draft:
        with self.transaction() as db:
            db.execute("UPDATE drafts SET text = ?, updated_at = ? WHERE id = ? AND status = 'open'",
                       (text, _now(), draft_id))
        return self.draft(draft_id)

    def discard_draft(self, draft_id: int) -> None:
        with self.transaction() as db:
            db.execute("UPDATE drafts SET status = 'discarded', updated_at = ? WHERE id = ? AND status = 'open'",
                       (_now(), draft_id))

    def draft(self, draft_id: int) -> Draft:
        row = self.db.execute("SELECT id, thread, text, status FROM drafts WHERE id = ?", (draft_id,)).fetchone()
        if row is None:
            raise KeyError(f"no draft {draft_id}")
        return Draft(*row)

    def open_drafts(self) -> list[Draft]:
        rows = self.db.execute("SELECT id, thread, text, status FROM drafts WHERE status = 'open' ORDER BY id")
        return [Draft(*row) for row in rows]

    def queue_draft(self, draft_id: int) -> OutboxEntry:
        """Move an open draft into the outbox, once: queuing it again is an error."""
        now = _now()
        with self.transaction() as db:
            row = db.execute("SELECT thread, text, status FROM drafts WHERE id = ?", (draft_id,)).fetchone()
            if row is None or row[2] != "open":
                raise ValueError(f"draft {draft_id} is not open")
            db.execute("UPDATE drafts SET status = 'queued', updated_at = ? WHERE id = ?", (now, draft_id))
            cursor = db.execute(
                "INSERT INTO outbox (thread, text, draft_id, queued_at) VALUES (?,?,?,?)",
                (row[0], row[1], draft_id, now),
            )
        return OutboxEntry(cursor.lastrowid, row[0], row[1], draft_id, now)

    def outbox(self) -> list[OutboxEntry]:
        return [OutboxEntry(*row) for row in self.db.execute(f"SELECT {_OUTBOX_COLUMNS} FROM outbox ORDER BY id")]

    def outbox_entry(self, entry_id: int) -> OutboxEntry:
        row = self.db.execute(f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE id = ?", (entry_id,)).fetchone()
        if row is None:
            raise KeyError(f"no outbox entry {entry_id}")
        return OutboxEntry(*row)

    def pending_deliveries(self, connector: str) -> list[OutboxEntry]:
        """Queued replies to the connector's threads, neither delivered nor given up, oldest first."""
        rows = self.db.execute(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE sent_at IS NULL AND failed_at IS NULL"
            " AND thread IN (SELECT thread FROM threads WHERE connector = ?) ORDER BY id", (connector,))
        return [OutboxEntry(*row) for row in rows]

    def mark_delivered(self, entry_id: int, remote_id: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE outbox SET sent_at = ?, remote_id = ?, attempts = attempts + 1, last_error = NULL"
                       " WHERE id = ? AND sent_at IS NULL", (_now(), remote_id, entry_id))

    def mark_delivery_failed(self, entry_id: int, error: str, *, permanent: bool) -> OutboxEntry:
        """Count a failed attempt; a permanent one ends the retries."""
        with self.transaction() as db:
            db.execute("UPDATE outbox SET attempts = attempts + 1, last_error = ?, failed_at = ?"
                       " WHERE id = ? AND sent_at IS NULL", (error, _now() if permanent else None, entry_id))
        return self.outbox_entry(entry_id)

    # -- on-device training data -----------------------------------------------

    def add_training_example(self, kind: str, thread: str, messages: Sequence[Message], output: str, outcome: str,
                             *, author: str = "", keep: int = 500) -> int:
        """Keep an accepted or edited summary/reply with its source messages; only the newest `keep` stay."""
        source = json.dumps([{"id": m.id, "thread": m.thread, "sender": m.sender, "text": m.text,
                              "sent_at": m.sent_at.isoformat()} for m in messages], ensure_ascii=False)
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT INTO training_examples (kind, thread, source, author, output, outcome, created_at)"
                " VALUES (?,?,?,?,?,?,?)", (kind, thread, source, author, output, outcome, _now()))
            self._trim_training_examples(db, keep, None)
        return cursor.lastrowid

    def prune_training_examples(self, keep: int, max_age_days: float | None = None) -> int:
        """Apply the retention limit (newest `keep`, none older than `max_age_days`); returns how many went."""
        with self.transaction() as db:
            return self._trim_training_examples(db, keep, max_age_days)

    @staticmethod
    def _trim_training_examples(db: sqlite3.Connection, keep: int, max_age_days: float | None) -> int:
        removed = db.execute("DELETE FROM training_examples WHERE id NOT IN"
                             " (SELECT id FROM training_examples ORDER BY id DESC LIMIT ?)", (keep,)).rowcount
        if max_age_days is not None:
            cutoff = datetime.now(timezone.utc).timestamp() - max_age_days * 86400
            cutoff_iso = datetime.fromtimestamp(cutoff, timezone.utc).isoformat()
            removed += db.execute("DELETE FROM training_examples WHERE created_at < ?", (cutoff_iso,)).rowcount
        return removed

    def adapter_health(self, after_summary: int, after_example: int) -> dict:
        """Counts since these row ids, for the fleet's canary health: no text, no thread, only how many.

        summaries: the model was asked (read verbatim is not counted); accepted_summaries: its draft passed
        every validator. replies: sent; accepted_replies: sent as drafted, not dictated again.
        """
        sources = [json.loads(r).get("source") for (r,) in self.db.execute(
            "SELECT record FROM summaries WHERE id > ?", (after_summary,))]
        outcomes = [o for (o,) in self.db.execute(
            "SELECT outcome FROM training_examples WHERE kind = 'reply' AND id > ?", (after_example,))]
        last_summary, = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM summaries").fetchone()
        last_example, = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM training_examples").fetchone()
        return {"summaries": sum(s in ("model", "fallback") for s in sources),
                "accepted_summaries": sum(s == "model" for s in sources),
                "replies": len(outcomes), "accepted_replies": sum(o == "accepted" for o in outcomes),
                "last_summary": max(last_summary, after_summary), "last_example": max(last_example, after_example)}

    def training_examples(self, limit: int | None = None) -> list[TrainingExample]:
        """The newest first."""
        rows = self.db.execute("SELECT id, kind, thread, source, author, output, outcome, created_at"
                               " FROM training_examples ORDER BY id DESC LIMIT ?", (limit if limit else -1,))
        return [TrainingExample(rid, kind, thread,
                                tuple(Message(m["id"], m["thread"], m["sender"], m["text"],
                                              parse_timestamp(m["sent_at"])) for m in json.loads(source)),
                                author, output, outcome, created)
                for rid, kind, thread, source, author, output, outcome, created in rows]


def _insert_message(db: sqlite3.Connection, message: Message, *, read: bool) -> bool:
    """Store one message unless its id is stored already; True if it was new."""
    now = _now()
    cursor = db.execute(
        "INSERT OR IGNORE INTO messages (id, thread, sender, text, sent_at, sent_utc, extra, received_at, read_at)"
        " VALUES (?,?,?,?,?,?,?,?,?)",
        (message.id, message.thread, message.sender, message.text, message.sent_at.isoformat(),
         message.sent_at.astimezone(timezone.utc).isoformat(), json.dumps(message.extra), now,
         now if read else None),
    )
    return bool(cursor.rowcount)


def _message(row: tuple) -> Message:
    mid, thread, sender, text, sent_at, extra = row
    return Message(mid, thread, sender, text, parse_timestamp(sent_at), json.loads(extra))
