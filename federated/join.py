"""A wearer's device in the fleet: a SuperNode training on its own store, and the newest signed version fetched.

    tidings federation device-key   this device's SuperNode key (made once); the operator admits its .pub
    tidings federation enroll       pin the operator's signing key and TLS CA
    tidings federation join         run the SuperNode and fetch each newly published version, until stopped

The SuperNode connects to the operator's SuperLink over TLS checked against
the pinned CA and proves itself with its key; a key the operator never
admitted is turned away by the SuperLink (Flower's exit code 305), and `join`
says so. Its ClientApp trains on this device's store (`store` node config)
and sends only the adapter update. Between rounds `join` asks the registry
which version the operator's signed rollout assigns this device (the canary
or the promoted one) and fetches it; a version that fails a check is refused
and the device keeps the one it has (device_sync.py). The agent swaps it into
its running engine (`tidings.device.fleet`). `join` also reports, for the
version running, how many summaries the model was asked for and how many of
its drafts the validators accepted, and how many replies were sent and how
many as drafted: counts since the last report, with no id and no text
(server/rollout.py decides from them).

Everything lives in the device dir: node-key(.pub), operator.pub,
operator-ca.crt, global/NNNN/ (fetched versions), train/ (the ClientApp's
checkpoint), flwr-home/ and logs/.
"""

from __future__ import annotations

import json
import logging
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tidings.device.store import Store
from tidings.federated.atomic import write_atomically
from tidings.federated.device_sync import (
    OPERATOR_CA,
    HttpsRegistry,
    IntegrityError,
    LocalVersion,
    RegistryUnreachable,
    current_version,
    fetch_newest,
    open_registry,
)
from tidings.server.credentials import make_node_key
from tidings.server.operator import BIN, flower_env, spawn, stop

log = logging.getLogger("tidings")
# flower-supernode exits 1 but logs Flower's exit code 305 when the SuperLink does not know its key.
NOT_ADMITTED = "Exit Code: 305"


HEALTH_MARK = "health-mark.json"  # which summaries and replies were already reported, for which version


class JoinError(RuntimeError):
    pass


def device_key(device_dir: Path) -> tuple[Path, Path]:
    return make_node_key(Path(device_dir) / "node-key")


@dataclass
class DeviceNode:
    device_dir: Path
    store: Path
    superlink: str  # HOST:PORT of the operator's SuperLink
    registry: str  # https://HOST:PORT of the operator's registry (or a directory)
    base_sha256: str
    host: str = "127.0.0.1"  # where this SuperNode's own Runtime API listens (for its ClientApp processes)
    port: int = 39500
    poll_seconds: float = 300.0
    _last_problem: str = field(default="", repr=False)  # said once, not at every poll

    @property
    def logs(self) -> Path:
        return Path(self.device_dir) / "logs"

    def start_supernode(self) -> subprocess.Popen:
        ca = Path(self.device_dir) / OPERATOR_CA
        if not ca.is_file():
            raise JoinError(f"no operator CA pinned in {self.device_dir}: "
                            "`tidings federation enroll --operator-key signing.pub --ca ca.crt` first")
        key, _ = device_key(self.device_dir)
        work = Path(self.device_dir) / "train"
        node_config = f'store="{Path(self.store).resolve()}" work-dir="{work.resolve()}"'
        return spawn([str(BIN / "flower-supernode"), "--root-certificates", str(ca),
                      "--superlink", self.superlink, "--host", self.host, "--port", str(self.port),
                      "--auth-supernode-private-key", str(key), "--node-config", node_config],
                     flower_env(Path(self.device_dir) / "flwr-home"), self.logs / "supernode.log",
                     Path(self.device_dir))

    def fetch(self) -> LocalVersion | None:
        """The version the rollout assigns this device, if it changed and passes every check; else None."""
        running = current_version(self.device_dir)
        have = running.version if running else -1
        try:
            local = fetch_newest(self.registry, self.device_dir, base_sha256=self.base_sha256)
        except FileNotFoundError:
            log.info("the registry has no published version yet")
            return None
        except RegistryUnreachable as exc:
            self._problem(f"{exc}; trying again every {self.poll_seconds:.0f} s")
            return None
        except IntegrityError as exc:
            self._problem(f"{exc}; this device keeps version {have if have >= 0 else 'none'}")
            return None
        self._last_problem = ""
        if local.version == have:
            return None
        log.warning("adapter version %d (round %d) fetched and verified", local.version, local.round)
        return local

    def report_health(self) -> bool:
        """Tell the registry how the running version does here: counts since the last report, nothing else."""
        running = current_version(self.device_dir)
        source = open_registry(self.registry, self.device_dir)
        if running is None or not isinstance(source, HttpsRegistry):
            return False
        mark_path = Path(self.device_dir) / HEALTH_MARK
        previous = json.loads(mark_path.read_text()) if mark_path.is_file() else None
        with Store(self.store) as store:
            counts = store.adapter_health(previous["summary"] if previous else 0,
                                          previous["example"] if previous else 0)
        mark = {"version": running.version, "summary": counts.pop("last_summary"),
                "example": counts.pop("last_example")}
        # What happened before the swap is the previous version's: only a full window under one version counts.
        fresh = previous is not None and previous["version"] == running.version
        if fresh and (counts["summaries"] or counts["replies"]):
            try:
                source.report_health({"version": running.version, **counts})
            except RegistryUnreachable as exc:
                self._problem(f"health report not sent: {exc}")
                return False
        write_atomically(mark_path, json.dumps(mark))
        return fresh

    def _problem(self, text: str) -> None:
        if text != self._last_problem:
            log.warning("%s", text)
        self._last_problem = text

    def join(self, stop_event: threading.Event) -> None:
        """Run the SuperNode, fetching between rounds, until `stop_event` is set; raises if the SuperNode ends."""
        Path(self.device_dir).mkdir(parents=True, exist_ok=True)
        log_path = self.logs / "supernode.log"
        logged_before = log_path.stat().st_size if log_path.is_file() else 0
        supernode = self.start_supernode()
        try:
            next_fetch = 0.0
            while supernode.poll() is None:
                if time.monotonic() >= next_fetch:
                    self.fetch()
                    self.report_health()
                    next_fetch = time.monotonic() + self.poll_seconds
                if stop_event.wait(1.0):
                    return
            with open(log_path, "rb") as f:
                f.seek(logged_before)
                said = f.read().decode(errors="replace")
            raise JoinError(self._ended(supernode.returncode, said))
        finally:
            stop(supernode)

    def _ended(self, code: int, said: str) -> str:
        if NOT_ADMITTED in said:
            return (f"the SuperLink at {self.superlink} does not know this device's key: ask the operator to "
                    f"admit it (`tidings federation admit {device_key(self.device_dir)[1]}`)")
        if code == 0:  # Flower ends a SuperNode the SuperLink unregistered as if asked to stop
            return (f"the SuperLink at {self.superlink} ended this device's session: the operator may have revoked "
                    f"its key (see {self.logs / 'supernode.log'})")
        return f"the SuperNode exited ({code}); see {self.logs / 'supernode.log'}"

