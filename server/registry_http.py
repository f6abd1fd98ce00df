"""The registry's HTTPS endpoint: what devices download, and nothing else.

    GET /versions                       {"versions": [{"version": 3, "round": 3, "sha256": ...}, ...]}
    GET /versions/0003/version.json     the signed manifest
    GET /versions/0003/version.sig      its Ed25519 signature
    GET /versions/0003/adapter.gguf     what the device's llama.cpp loads
    GET /versions/0003/adapter.npz      what its personal training starts from
    GET /rollout.json, /rollout.sig     which version every device runs and which is the canary (rollout.py)
    POST /health                        a device's anonymous counts for the version it runs

Only published versions are listed and served (not those the quality gate rejected). The endpoint is read-only and
serves files by exact name, so no path a client sends reaches the disk. The
TLS certificate is the deployment's (credentials.py): devices check it
against the CA they pinned at enrolment.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tidings.server.registry import AdapterRegistry
from tidings.server.rollout import Rollout

log = logging.getLogger("tidings")
MAX_REPORT_BYTES = 1024
SERVED = ("version.json", "version.sig", "adapter.gguf", "adapter.npz")
_FILE = re.compile(r"^/versions/(\d{4})/(" + "|".join(re.escape(n) for n in SERVED) + r")$")


def _handler(registry: AdapterRegistry, rollout: Rollout | None) -> type[BaseHTTPRequestHandler]:
    class RegistryHandler(BaseHTTPRequestHandler):
        server_version = "tidings-registry"

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path == "/versions":
                body = json.dumps({"versions": [{"version": v.version, "round": v.round, "sha256": v.sha256}
                                                for v in registry.published()]}).encode()
                return self._send(body, "application/json")
            if self.path in ("/rollout.json", "/rollout.sig") and rollout is not None:
                manifest, signature = rollout.signed()
                if not manifest:
                    return self.send_error(HTTPStatus.NOT_FOUND)
                return self._send(manifest if self.path == "/rollout.json" else signature, "application/octet-stream")
            match = _FILE.match(self.path)
            if not match or not _published(registry, int(match[1])):
                return self.send_error(HTTPStatus.NOT_FOUND)
            self._send((registry.dir(int(match[1])) / match[2]).read_bytes(), "application/octet-stream")

        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            if self.path != "/health" or rollout is None:
                return self.send_error(HTTPStatus.NOT_FOUND)
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_REPORT_BYTES:
                return self.send_error(HTTPStatus.BAD_REQUEST, "a health report is a small JSON object")
            try:
                report = json.loads(self.rfile.read(length))
                rollout.report(report if isinstance(report, dict) else {})
            except ValueError as exc:
                return self.send_error(HTTPStatus.BAD_REQUEST, str(exc).splitlines()[0][:200])
            self._send(b'{"ok": true}', "application/json")

        def _send(self, body: bytes, kind: str) -> None:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's signature)
            log.debug("registry: %s %s", self.address_string(), format % args)

    return RegistryHandler


def _published(registry: AdapterRegistry, version: int) -> bool:
    """One manifest read per file served, not the whole listing."""
    try:
        return not registry.get(version).rejected
    except KeyError:
        return False


class RegistryServer:
    """Serves `registry` on https://host:port/ on a thread of its own until `close()`."""

    def __init__(self, registry: AdapterRegistry, host: str, port: int, cert: Path, key: Path,
                 rollout: Rollout | None = None) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert, key)
        self.httpd = ThreadingHTTPServer((host, port), _handler(registry, rollout))
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="tidings-registry", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"https://{host}:{port}"

    def start(self) -> RegistryServer:
        self.thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
