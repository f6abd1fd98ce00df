"""Bring messages into the store: from a JSON-lines file, stdin, or local HTTP.

Every source goes through the same parser and the same `Store.add`, so the
rules are the same wherever a message comes from: bad lines are reported with
their line number and kept in the store for inspection, good lines around
them are stored, and ids already stored are ignored.

The HTTP endpoint listens on loopback only by default: it is how the phone's
messaging bridge hands messages to the glasses, not a public service.

    POST /messages   body: JSON lines   ->  {"added": n, "duplicates": n, "errors": [...]}
    GET  /health                        ->  {"ok": true, "messages": n}
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import BinaryIO

from tidings.device.messages import parse_lines
from tidings.device.store import IngestReport, Store

MAX_BODY_BYTES = 16 * 1024 * 1024


def ingest_stream(store: Store, stream: BinaryIO, origin: str) -> IngestReport:
    return store.add(parse_lines(stream), origin)


def ingest_file(store: Store, path: Path) -> IngestReport:
    if str(path) == "-":
        return ingest_stream(store, sys.stdin.buffer, "stdin")
    with open(path, "rb") as f:
        return ingest_stream(store, f, str(path))


def report_json(report: IngestReport) -> dict:
    return {
        "added": report.added,
        "duplicates": report.duplicates,
        "errors": [{"line": e.line, "reason": e.reason} for e in report.errors],
    }


class IngestServer(ThreadingHTTPServer):
    """Serves POST /messages into one store; writes are serialized by a lock."""

    daemon_threads = True

    def __init__(self, store_path: Path, host: str = "127.0.0.1", port: int = 8765) -> None:
        self.store_path = store_path
        self.lock = threading.Lock()
        super().__init__((host, port), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: IngestServer

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path != "/health":
            return self._reply(404, {"error": "not found; POST JSON lines to /messages"})
        with self.server.lock, Store(self.server.store_path) as store:
            self._reply(200, {"ok": True, "messages": store.message_count()})

    def do_POST(self) -> None:  # noqa: N802
        if self.path != "/messages":
            return self._reply(404, {"error": "not found; POST JSON lines to /messages"})
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            return self._reply(413, {"error": f"body over {MAX_BODY_BYTES} bytes; send fewer messages per request"})
        body = self.rfile.read(length)
        with self.server.lock, Store(self.server.store_path) as store:
            report = store.add(parse_lines(body.splitlines()), origin="http")
        self._reply(400 if report.errors else 200, report_json(report))

    def log_message(self, format: str, *args: object) -> None:
        # Request lines carry no message text, but keep stderr for real problems.
        pass
