"""A throwaway Synapse homeserver on loopback, for the Matrix tests and benchmark.

The real reference homeserver from the `matrix-synapse` package, with SQLite in
a directory of its own, listening on 127.0.0.1 only, federation off, rate
limits lifted (a test sends hundreds of messages in seconds) and registration
by shared secret, so tests create their users through the admin API exactly as
an operator would.

    with Homeserver(tmp_path) as hs:
        alex = hs.register("alex", "secret", displayname="Alex")
        hs.stop(); hs.start()          # "the homeserver is down", then back

`Homeserver.client_api` is a small synchronous client over the client-server
API for the *other* people in a test (Mom, Sam): it is not what the device
uses; the device's connector is `tidings.device.matrix`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import yaml

SERVER_NAME = "localhost"
_LIFTED = {"per_second": 10000, "burst_count": 10000}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class HomeserverError(RuntimeError):
    pass


@dataclass(frozen=True)
class Account:
    user_id: str
    access_token: str
    device_id: str


class Homeserver:
    """Synapse in `directory`; `start()` and `stop()` may be called again (the data stays)."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = Path(directory)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = self.directory / "homeserver.yaml"
        self.log_path = self.directory / "homeserver.log"
        self.process: subprocess.Popen | None = None
        if not self.config_path.exists():
            self._write_config()
        self.shared_secret = yaml.safe_load(self.config_path.read_text())["registration_shared_secret"]

    def _write_config(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        generated = self.directory / "generated.yaml"
        subprocess.run([sys.executable, "-m", "synapse.app.homeserver", "--server-name", SERVER_NAME,
                        "--config-path", str(generated), "--generate-config", "--report-stats=no",
                        "--data-directory", str(self.directory)],
                       check=True, capture_output=True, cwd=self.directory)
        config = yaml.safe_load(generated.read_text())
        generated.unlink()
        log_config = self.directory / "log.yaml"
        log_config.write_text(yaml.safe_dump({
            "version": 1,
            "formatters": {"plain": {"format": "%(asctime)s %(name)s %(levelname)s %(message)s"}},
            "handlers": {"file": {"class": "logging.FileHandler", "formatter": "plain",
                                  "filename": str(self.log_path)}},
            "root": {"level": "WARNING", "handlers": ["file"]},
            "disable_existing_loggers": False,
        }))
        config.update({
            "listeners": [{"port": self.port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": False,
                           "x_forwarded": False, "resources": [{"names": ["client"], "compress": False}]}],
            "database": {"name": "sqlite3", "args": {"database": str(self.directory / "homeserver.db")}},
            "log_config": str(log_config),
            "pid_file": str(self.directory / "homeserver.pid"),
            "media_store_path": str(self.directory / "media"),
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "federation_domain_whitelist": [],
            "enable_registration": False,
            "presence": {"enabled": False},
            "rc_message": _LIFTED, "rc_registration": _LIFTED, "rc_joins": {"local": _LIFTED, "remote": _LIFTED},
            "rc_login": {"address": _LIFTED, "account": _LIFTED, "failed_attempts": _LIFTED},
            "rc_invites": {"per_room": _LIFTED, "per_user": _LIFTED, "per_issuer": _LIFTED},
            "rc_admin_redaction": _LIFTED,
            "rc_room_creation": _LIFTED,
            "rc_key_requests": _LIFTED,
        })
        self.config_path.write_text(yaml.safe_dump(config))

    # -- process ----------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        if self.process is not None:
            return
        self.process = subprocess.Popen(
            [sys.executable, "-m", "synapse.app.homeserver", "--config-path", str(self.config_path)],
            cwd=self.directory, stdout=subprocess.DEVNULL, stderr=open(self.directory / "stderr.log", "ab"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                raise HomeserverError(f"Synapse exited at start; see {self.directory / 'stderr.log'} "
                                      f"and {self.log_path}")
            try:
                self.request("GET", "/_matrix/client/versions", timeout=1)
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        self.stop()
        raise HomeserverError(f"Synapse did not answer on {self.url} within {timeout:.0f} s")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def __enter__(self) -> Homeserver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the client-server API, for the other people in a test -------------------

    def request(self, method: str, path: str, body: dict | None = None, token: str | None = None,
                timeout: float = 30) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raise HomeserverError(f"{method} {path}: HTTP {exc.code} {exc.read().decode(errors='replace')}") from None

    def register(self, localpart: str, password: str, displayname: str | None = None,
                 admin: bool = False) -> Account:
        """Create a user with the shared secret (Synapse's admin registration API)."""
        nonce = self.request("GET", "/_synapse/admin/v1/register")["nonce"]
        mac = hmac.new(self.shared_secret.encode(), digestmod=hashlib.sha1)
        mac.update(b"\x00".join([nonce.encode(), localpart.encode(), password.encode(),
                                 b"admin" if admin else b"notadmin"]))
        reply = self.request("POST", "/_synapse/admin/v1/register", {
            "nonce": nonce, "username": localpart, "password": password, "admin": admin,
            "mac": mac.hexdigest()})
        account = Account(reply["user_id"], reply["access_token"], reply["device_id"])
        if displayname:
            self.request("PUT", f"/_matrix/client/v3/profile/{_q(account.user_id)}/displayname",
                         {"displayname": displayname}, account.access_token)
        return account

    def create_room(self, owner: Account, name: str | None = None, invite: tuple[str, ...] = (),
                    direct: bool = False) -> str:
        body: dict = {"invite": list(invite), "is_direct": direct, "preset": "private_chat"}
        if name:
            body["name"] = name
        return self.request("POST", "/_matrix/client/v3/createRoom", body, owner.access_token)["room_id"]

    def join(self, account: Account, room_id: str) -> None:
        self.request("POST", f"/_matrix/client/v3/join/{_q(room_id)}", {}, account.access_token)

    def send(self, account: Account, room_id: str, body: str, msgtype: str = "m.text", **content) -> str:
        txn = uuid.uuid4().hex
        return self.request("PUT", f"/_matrix/client/v3/rooms/{_q(room_id)}/send/m.room.message/{txn}",
                            {"msgtype": msgtype, "body": body, **content}, account.access_token)["event_id"]

    def redact(self, account: Account, room_id: str, event_id: str) -> None:
        self.request("PUT", f"/_matrix/client/v3/rooms/{_q(room_id)}/redact/{_q(event_id)}/{uuid.uuid4().hex}",
                     {}, account.access_token)

    def messages(self, account: Account, room_id: str, limit: int = 100) -> list[dict]:
        """The room's newest `limit` events, oldest first."""
        reply = self.request("GET", f"/_matrix/client/v3/rooms/{_q(room_id)}/messages?dir=b&limit={limit}",
                             token=account.access_token)
        return reply["chunk"][::-1]

    def receipts(self, account: Account, room_id: str) -> dict[str, str]:
        """Who has read up to which event: user id -> event id, from the room's m.receipt."""
        events = self.request("GET", "/_matrix/client/v3/sync?timeout=0", token=account.access_token)
        ephemeral = events["rooms"]["join"].get(room_id, {}).get("ephemeral", {}).get("events", [])
        read: dict[str, str] = {}
        for event in ephemeral:
            if event["type"] != "m.receipt":
                continue
            for event_id, kinds in event["content"].items():
                for user in kinds.get("m.read", {}):
                    read[user] = event_id
        return read


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")
