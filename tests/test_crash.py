"""SIGKILL in the middle of ingesting and summarizing: nothing lost, nothing announced twice."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

THREADS = 400
PER_THREAD = 60


@pytest.fixture(scope="module")
def feed(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("feed") / "feed.jsonl"
    with path.open("w") as f:
        for i in range(THREADS * PER_THREAD):
            thread = f"t{i % THREADS:03d}"
            text = f"Message {i} for {thread}: can you bring {i % 7} chairs at {i % 12 + 1}pm?"
            f.write(json.dumps({"id": f"m{i}", "thread": thread, "sender": f"P{i % 5}", "text": text,
                                "sent_at": f"2026-11-20T{i % 24:02d}:{i % 60:02d}:00Z"}) + "\n")
    return path


def start(feed: Path, store: Path, tmp_path: Path) -> subprocess.Popen:
    config = tmp_path / "tidings.toml"
    # No model (verbatim and fallback summaries): this test is about the store, and must summarize hundreds of threads quickly.
    config.write_text('[model]\ntask_adapter = ""\n[wearer]\nname = "Me"\n')
    return subprocess.Popen(
        [sys.executable, "-m", "tidings.device.cli", "--config", str(config), "--store", str(store),
         "summarize", str(feed), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )


def stored_ids(store: Path) -> list[str]:
    with sqlite3.connect(store) as db:
        return [row[0] for row in db.execute("SELECT id FROM messages")]


def kill_when(process: subprocess.Popen, ready, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, "the process finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


def summary_count(store: Path) -> int:
    try:
        with sqlite3.connect(store) as db:
            return db.execute("SELECT count(*) FROM summaries").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def message_count(store: Path) -> int:
    try:
        with sqlite3.connect(store) as db:
            return db.execute("SELECT count(*) FROM messages").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def announced(process_output: str) -> list[str]:
    return [json.loads(line)["thread"] for line in process_output.splitlines() if line.strip()]


def run_to_end(feed: Path, store: Path, tmp_path: Path) -> list[str]:
    process = start(feed, store, tmp_path)
    out, _ = process.communicate(timeout=600)
    assert process.returncode == 0
    return announced(out)


def check_exactly_once(store: Path, announcements: list[str], killed_while_announcing: bool = False) -> None:
    """Every message stored once, every thread summarized once, no thread announced twice.

    A summary is saved (and its messages marked read) before it is printed, so
    a kill in the instant between the two leaves that one summary saved but not
    printed: announcements are at most once, never twice.
    """
    ids = stored_ids(store)
    assert len(ids) == len(set(ids)) == THREADS * PER_THREAD
    counts = Counter(announcements)
    assert max(counts.values()) == 1, f"announced twice: {[t for t, n in counts.items() if n > 1]}"
    unprinted = {f"t{i:03d}" for i in range(THREADS)} - set(counts)
    assert len(unprinted) <= (1 if killed_while_announcing else 0), unprinted
    with sqlite3.connect(store) as db:
        per_thread = Counter(t for (t,) in db.execute("SELECT thread FROM summaries"))
        unread = db.execute("SELECT count(*) FROM messages WHERE read_at IS NULL").fetchone()[0]
    assert set(per_thread.values()) == {1} and unread == 0


def test_kill_while_ingesting(feed: Path, tmp_path: Path):
    store = tmp_path / "store.db"
    process = start(feed, store, tmp_path)
    kill_when(process, lambda: message_count(store) > 0)
    assert 0 < message_count(store) < THREADS * PER_THREAD
    assert summary_count(store) == 0
    check_exactly_once(store, run_to_end(feed, store, tmp_path))


def test_kill_while_summarizing(feed: Path, tmp_path: Path):
    store = tmp_path / "store.db"
    process = start(feed, store, tmp_path)
    kill_when(process, lambda: summary_count(store) >= 20)
    before = announced(process.stdout.read())
    assert 19 <= len(before) < THREADS
    check_exactly_once(store, before + run_to_end(feed, store, tmp_path), killed_while_announcing=True)
