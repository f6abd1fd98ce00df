"""The operator's machine: a SuperLink for the rounds and an HTTPS registry for the versions devices download.

    tidings federation serve    SuperLink (TLS, SuperNode auth), the registry endpoint and the canary rollout
                                (rollout.py); runs until stopped
    tidings federation admit    register a device's public key: only admitted devices may join (devices.json)
    tidings federation run      submit the app (ServerApp + ClientApp) with `flwr run`, wait for it to end
    tidings federation status   rounds, devices, ε, versions (status.py)

Devices run `tidings federation join` on their own machines (federated/join.py):
nothing but adapter updates (to the SuperLink) and adapter downloads (from the
registry) crosses between the two.

Everything lives under `STATE/deploy/`: tls/ (the CA devices pin, and the
server certificate for the address served on), flwr-home/ (the Flower CLI's
connection `tidings`), superlink.db (the SuperLink's state), logs/, app/
(the Flower app description `flwr run` packs: it names the installed tidings
modules as components), serving.json (the addresses and the SuperLink's
process, so `run`, `admit` and `status` from another shell find them),
devices.json (each admitted device's SuperNode id, key sha256, admission and
revocation) and actions.jsonl (what the operator did from the dashboard).
Runtime dependency installation is off: the SuperLink runs the ServerApp
from this environment.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from tidings.federated.atomic import exclusive, write_atomically
from tidings.server.credentials import make_tls
from tidings.server.registry import AdapterRegistry
from tidings.server.registry_http import RegistryServer
from tidings.server.rollout import Rollout, RolloutPolicy
from tidings.server.settings import FederationSettings

CONNECTION = "tidings"
BIN = Path(sys.executable).parent


class OperatorError(RuntimeError):
    pass


def flower_env(flwr_home: Path) -> dict[str, str]:
    return {**os.environ, "FLWR_HOME": str(flwr_home), "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONUNBUFFERED": "1"}


def spawn(args: list[str], env: dict[str, str], log_path: Path, cwd: Path) -> subprocess.Popen:
    """A Flower process in a session of its own, so stopping it stops the processes it spawned too."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                start_new_session=True)


def stop(process: subprocess.Popen, grace_s: float = 15.0) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace_s)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@dataclass(frozen=True)
class Serving:
    host: str
    port: int
    registry_url: str
    superlink_pid: int


@dataclass(frozen=True)
class Operator:
    state_dir: Path
    host: str = "127.0.0.1"
    port: int = 39400
    registry_port: int = 39450
    rollout: RolloutPolicy = RolloutPolicy()

    @property
    def root(self) -> Path:
        return Path(self.state_dir) / "deploy"

    @property
    def flwr_home(self) -> Path:
        return self.root / "flwr-home"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def serving_file(self) -> Path:
        return self.root / "serving.json"

    def tls(self) -> dict[str, Path]:
        return make_tls(self.root / "tls", hosts=(self.host,))

    def flwr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([str(BIN / "flwr"), *args], env=flower_env(self.flwr_home), capture_output=True,
                              text=True, cwd=self.root)
        if check and done.returncode:
            raise OperatorError(f"flwr {' '.join(args)} failed ({done.returncode}): {done.stdout}{done.stderr}")
        return done

    def serving(self) -> Serving | None:
        if not self.serving_file.is_file():
            return None
        serving = Serving(**json.loads(self.serving_file.read_text()))
        return serving if _alive(serving.superlink_pid) else None

    # -- serving ------------------------------------------------------------------

    def start_superlink(self) -> subprocess.Popen:
        tls = self.tls()
        self._write_connection(tls["ca"])
        return spawn([str(BIN / "flower-superlink"), "--ssl-ca-certfile", str(tls["ca"]),
                      "--ssl-certfile", str(tls["cert"]), "--ssl-keyfile", str(tls["key"]),
                      "--enable-supernode-auth", "--isolation", "subprocess",
                      "--database", str(self.root / "superlink.db"), "--host", self.host,
                      "--port", str(self.port), "--disable-runtime-dependency-installation"],
                     flower_env(self.flwr_home), self.logs / "superlink.log", self.root)

    def serve(self, stop_event: threading.Event, on_ready=lambda serving: None, deadline_s: float = 120) -> None:
        """Run the SuperLink and the registry endpoint until `stop_event` is set or the SuperLink dies."""
        if self.serving() is not None:
            raise OperatorError(f"this state directory is already served (see {self.serving_file})")
        self.root.mkdir(parents=True, exist_ok=True)
        tls = self.tls()
        registry = AdapterRegistry(self.state_dir)
        rollout = Rollout(registry, self.rollout)
        endpoint = RegistryServer(registry, self.host, self.registry_port, tls["cert"], tls["key"], rollout)
        superlink = self.start_superlink()
        try:
            self._wait_for(superlink, deadline_s)
            endpoint.start()
            serving = Serving(self.host, self.port, endpoint.url, superlink.pid)
            write_atomically(self.serving_file, json.dumps(asdict(serving), indent=2))
            on_ready(serving)
            while not stop_event.wait(1.0):
                rollout.sync()
                rollout.decide()
                if superlink.poll() is not None:
                    raise OperatorError(f"the SuperLink exited ({superlink.returncode}); see "
                                        f"{self.logs / 'superlink.log'}")
        finally:
            endpoint.close()
            stop(superlink)
            self.serving_file.unlink(missing_ok=True)

    def _write_connection(self, ca: Path) -> None:
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        (self.flwr_home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "{self.host}:{self.port}"\nroot-certificates = "{ca}"\n')

    def _wait_for(self, process: subprocess.Popen, deadline_s: float) -> None:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if process.poll() is not None:
                raise OperatorError(f"the SuperLink exited ({process.returncode}); see {self.logs / 'superlink.log'}")
            if self.listing() is not None:
                return
            time.sleep(1)
        raise OperatorError("the SuperLink did not come up")

    # -- devices --------------------------------------------------------------------

    @property
    def devices_file(self) -> Path:
        return self.root / "devices.json"

    def devices(self) -> dict[str, dict]:
        """Admitted devices by SuperNode id: the key's sha256, when admitted, and when revoked if it was."""
        return json.loads(self.devices_file.read_text()) if self.devices_file.is_file() else {}

    def admit(self, public_key: Path) -> str:
        """Register a device's SuperNode key (the `node-key.pub` that `tidings federation device-key` shows);
        returns the SuperNode id the SuperLink gave it."""
        if not Path(public_key).is_file():
            raise OperatorError(f"{public_key}: no such public key")
        done = self.flwr("supernode", "register", str(public_key), CONNECTION, "--format", "json")
        node_id = str(json.loads(done.stdout)["node-id"])
        with exclusive(self.root / "devices.lock"):
            devices = self.devices()
            devices[node_id] = {"key_sha256": hashlib.sha256(Path(public_key).read_bytes()).hexdigest(),
                                "admitted": _now(), "revoked": None}
            write_atomically(self.devices_file, json.dumps(devices, indent=2))
        return node_id

    def revoke(self, node_id: str) -> None:
        """Unregister a device: its key can no longer join a round."""
        self.flwr("supernode", "unregister", str(node_id), CONNECTION)
        with exclusive(self.root / "devices.lock"):
            devices = self.devices()
            devices.setdefault(str(node_id), {"key_sha256": None, "admitted": None})["revoked"] = _now()
            write_atomically(self.devices_file, json.dumps(devices, indent=2))

    def listing(self) -> list[dict] | None:
        """The SuperLink's SuperNodes (registered, online, offline), or None if it cannot be reached."""
        # flwr exits 0 on connection errors too: only a successful JSON answer counts.
        done = self.flwr("supernode", "list", CONNECTION, "--format", "json", check=False)
        try:
            answer = json.loads(done.stdout)
        except ValueError:
            return None
        return answer.get("nodes", []) if answer.get("success") else None

    def online_nodes(self) -> list[dict]:
        return [n for n in self.listing() or [] if n.get("status") == "online"]

    # -- rounds ---------------------------------------------------------------------

    def run(self, settings: FederationSettings, poll_s: float = 3.0) -> dict:
        """Submit the app and wait until the run ends; returns Flower's run record (status, times)."""
        app = write_app(self.root, settings)
        done = self.flwr("run", str(app), CONNECTION, "--run-config", settings.run_config_arg(), "--format", "json")
        run_id = json.loads(done.stdout)["run-id"]
        while True:
            listing = json.loads(self.flwr("ls", CONNECTION, "--run-id", str(run_id), "--format", "json").stdout)
            record = listing["runs"][0]
            if str(record.get("status", "")).startswith("finished"):
                return record
            time.sleep(poll_s)


def write_app(root: Path, settings: FederationSettings) -> Path:
    """The Flower app `flwr run` packs: components are the installed tidings modules."""
    app = root / "app"
    app.mkdir(parents=True, exist_ok=True)
    defaults = "\n".join(f"{key} = {_toml(value)}" for key, value in settings.to_run_config().items())
    (app / "pyproject.toml").write_text(f"""[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "tidings-federation"
version = "1.0.0"
description = "Tidings federated personalization"
license = "Apache-2.0"
dependencies = ["flwr[simulation]==1.41.0"]

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "tidings"

[tool.flwr.app.components]
serverapp = "tidings.server.server_app:app"
clientapp = "tidings.federated.client_app:app"

[tool.flwr.app.config]
{defaults}
""")
    return app


def _toml(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
