"""A real deployment on this machine: a SuperLink and SuperNodes on 127.0.0.1 with TLS and SuperNode auth.

    tidings federation up       credentials (once), SuperLink, register and start the SuperNodes
    tidings federation run      submit the app (ServerApp + ClientApp) with `flwr run`, wait for it to end
    tidings federation status   rounds, devices, ε, versions (status.py)
    tidings federation down     stop every process `up` started

Everything lives under `STATE/deploy/`: tls/ and keys/ (credentials),
flwr-home/ (the Flower CLI's connection `tidings`), superlink.db (the
SuperLink's state), logs/, app/ (the Flower app description `flwr run`
packs: it names the installed tidings modules as components) and
deploy.json (process ids and ports, so `down` stops exactly those). Runtime
dependency installation is off: SuperLink and SuperNodes run the app from
this environment. A SuperNode's data is its device store (`store` node
config); without stores, SuperNode i gets simulation partition i.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tidings.server.credentials import make_node_key, make_tls
from tidings.server.settings import FederationSettings

CONNECTION = "tidings"
BIN = Path(sys.executable).parent


class DeploymentError(RuntimeError):
    pass


@dataclass
class DeployState:
    port: int
    superlink_pid: int
    supernodes: list[dict] = field(default_factory=list)  # {"pid", "port", "key", "store"}


@dataclass(frozen=True)
class Deployment:
    state_dir: Path
    port: int = 39400

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
    def state_file(self) -> Path:
        return self.root / "deploy.json"

    def env(self) -> dict[str, str]:
        return {**os.environ, "FLWR_HOME": str(self.flwr_home), "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
                "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONUNBUFFERED": "1"}

    def tls(self) -> dict[str, Path]:
        return make_tls(self.root / "tls")

    def flwr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([str(BIN / "flwr"), *args], env=self.env(), capture_output=True, text=True,
                              cwd=self.root)
        if check and done.returncode:
            raise DeploymentError(f"flwr {' '.join(args)} failed ({done.returncode}): {done.stdout}{done.stderr}")
        return done

    def load(self) -> DeployState | None:
        if not self.state_file.is_file():
            return None
        return DeployState(**json.loads(self.state_file.read_text()))

    def save(self, state: DeployState) -> None:
        tmp = self.state_file.with_name("deploy.json.tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2))
        os.replace(tmp, self.state_file)

    # -- processes ------------------------------------------------------------

    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / log_name, "ab")
        # Own session: `down` stops the process with the children it spawned (SuperExec, app processes).
        return subprocess.Popen(args, env=self.env(), stdout=log, stderr=subprocess.STDOUT, cwd=self.root,
                                start_new_session=True)

    def start_superlink(self) -> subprocess.Popen:
        tls = self.tls()
        self._write_connection(tls["ca"])
        return self._spawn([str(BIN / "flower-superlink"), "--ssl-ca-certfile", str(tls["ca"]),
                            "--ssl-certfile", str(tls["cert"]), "--ssl-keyfile", str(tls["key"]),
                            "--enable-supernode-auth", "--isolation", "subprocess",
                            "--database", str(self.root / "superlink.db"), "--host", "127.0.0.1",
                            "--port", str(self.port), "--disable-runtime-dependency-installation"],
                           "superlink.log")

    def start_supernode(self, index: int, key: Path, node_config: str) -> subprocess.Popen:
        return self._spawn([str(BIN / "flower-supernode"), "--root-certificates", str(self.tls()["ca"]),
                            "--superlink", f"127.0.0.1:{self.port}", "--port", str(self.port + 1 + index),
                            "--auth-supernode-private-key", str(key), "--node-config", node_config],
                           f"supernode-{index}.log")

    def node_key(self, index: int) -> tuple[Path, Path]:
        return make_node_key(self.root / "keys" / f"supernode-{index}")

    def register(self, public_key: Path) -> None:
        self.flwr("supernode", "register", str(public_key), CONNECTION)

    def _write_connection(self, ca: Path) -> None:
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        (self.flwr_home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "127.0.0.1:{self.port}"\nroot-certificates = "{ca}"\n')

    def wait_for_superlink(self, process: subprocess.Popen, deadline_s: float = 120) -> None:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if process.poll() is not None:
                raise DeploymentError(f"the SuperLink exited ({process.returncode}); see {self.logs / 'superlink.log'}")
            if self.listing() is not None:
                return
            time.sleep(1)
        raise DeploymentError("the SuperLink did not come up")

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


def node_config(index: int, count: int, store: Path | None, work_dir: Path) -> str:
    data = f'store="{store}"' if store else f"partition-id={index} num-partitions={count}"
    return f'{data} work-dir="{work_dir}"'


def up(deployment: Deployment, supernodes: int, stores: list[Path] | None = None) -> DeployState:
    if stores and len(stores) != supernodes:
        raise DeploymentError(f"{len(stores)} stores for {supernodes} SuperNodes")
    existing = deployment.load()
    if existing and _alive(existing.superlink_pid):
        raise DeploymentError(f"a deployment is already up (SuperLink pid {existing.superlink_pid}); "
                              f"`tidings federation down` first")
    deployment.root.mkdir(parents=True, exist_ok=True)
    superlink = deployment.start_superlink()
    state = DeployState(deployment.port, superlink.pid)
    deployment.save(state)
    deployment.wait_for_superlink(superlink)
    for index in range(supernodes):
        key, public = deployment.node_key(index)
        deployment.register(public)
        store = Path(stores[index]).resolve() if stores else None
        work = deployment.root / "devices" / f"{index}"
        process = deployment.start_supernode(index, key, node_config(index, supernodes, store, work))
        state.supernodes.append({"pid": process.pid, "port": deployment.port + 1 + index, "key": str(key),
                                 "store": str(store) if store else None})
        deployment.save(state)
    return state


def write_app(deployment: Deployment, settings: FederationSettings) -> Path:
    """The Flower app `flwr run` packs: components are the installed tidings modules."""
    app = deployment.root / "app"
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


def run(deployment: Deployment, settings: FederationSettings, poll_s: float = 3.0) -> dict:
    """Submit the app and wait until the run ends; returns Flower's run record (status, times)."""
    app = write_app(deployment, settings)
    done = deployment.flwr("run", str(app), CONNECTION, "--run-config", settings.run_config_arg(),
                           "--format", "json")
    run_id = json.loads(done.stdout)["run-id"]
    while True:
        listing = json.loads(deployment.flwr("ls", CONNECTION, "--run-id", str(run_id), "--format", "json").stdout)
        record = listing["runs"][0]
        if str(record.get("status", "")).startswith("finished"):
            return record
        time.sleep(poll_s)


def down(deployment: Deployment) -> int:
    """Stop the SuperNodes, then the SuperLink (each with the processes it spawned); returns how many."""
    state = deployment.load()
    if state is None:
        return 0
    stopped = 0
    for pid in [n["pid"] for n in state.supernodes] + [state.superlink_pid]:
        if _alive(pid):
            try:
                os.killpg(pid, signal.SIGTERM)  # the session `_spawn` gave this process: its group id is its pid
                stopped += 1
            except ProcessLookupError:
                pass
    for pid in [n["pid"] for n in state.supernodes] + [state.superlink_pid]:
        _reap(pid)
    deployment.state_file.unlink()
    return stopped


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reap(pid: int, grace_s: float = 15.0) -> None:
    end = time.monotonic() + grace_s
    while _alive(pid) and time.monotonic() < end:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
        except ChildProcessError:
            pass
        time.sleep(0.2)
    if _alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
