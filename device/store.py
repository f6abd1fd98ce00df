"""The device's local store: messages, read state, summaries, drafts, outbox.

SQLite in WAL mode with synchronous=FULL: a committed transaction survives a
crash or power loss. Each step that must not happen twice commits together
with its effect: a summary is written, its messages marked read and the
summary marked announced in one transaction, before the summary is shown, so
a restart never announces it again. Message ids are primary keys, so feeding
the same messages twice stores them once.
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
"""


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
        self.path = path

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
                        continue
                    cursor = db.execute(
                        "INSERT OR IGNORE INTO messages"
                        " (id, thread, sender, text, sent_at, sent_utc, extra, received_at)"
                        " VALUES (?,?,?,?,?,?,?,?)",
                        (item.id, item.thread, item.sender, item.text, item.sent_at.isoformat(),
                         item.sent_at.astimezone(timezone.utc).isoformat(),
                         json.dumps(item.extra), _now()),
                    )
                    if cursor.rowcount:
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
        rows = self.db.execute("SELECT id, thread, text, draft_id, queued_at FROM outbox ORDER BY id")
        return [OutboxEntry(*row) for row in rows]


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

    def training_examples(self, limit: int | None = None) -> list[TrainingExample]:
        """The newest first."""
        rows = self.db.execute("SELECT id, kind, thread, source, author, output, outcome, created_at"
                               " FROM training_examples ORDER BY id DESC LIMIT ?", (limit if limit else -1,))
        return [TrainingExample(rid, kind, thread,
                                tuple(Message(m["id"], m["thread"], m["sender"], m["text"],
                                              parse_timestamp(m["sent_at"])) for m in json.loads(source)),
                                author, output, outcome, created)
                for rid, kind, thread, source, author, output, outcome, created in rows]


def _message(row: tuple) -> Message:
    mid, thread, sender, text, sent_at, extra = row
    return Message(mid, thread, sender, text, parse_timestamp(sent_at), json.loads(extra))
