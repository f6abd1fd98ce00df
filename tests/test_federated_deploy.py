"""Acceptance: the operator and three devices as separate processes on separate loopback addresses.

The operator serves on 127.0.0.2 (`tidings federation serve`: SuperLink with
TLS and SuperNode auth, and the HTTPS registry); each device runs
`tidings federation join` from its own state on 127.0.0.3, .4 and .5, with
its own SuperNode key, which the operator admitted. A fourth device that was
never admitted is turned away. Two rounds with SecAgg+, the real model and
real LoRA training (one step per device), pass the quality gate and publish
signed versions; each
device fetches the newest over HTTPS (the certificate checked against the
operator CA it pinned), verifies it and its agent hot-swaps it into the
engine. A version tampered with after signing is refused by every device.

Each device's store holds a unique canary string in its messages and in what
the wearer accepted; no byte the operator received or stored (the
SuperLink's database with every message it relayed, the versions, round log,
logs, the app bundle) contains any canary.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="federation needs the `train` extra")

from tidings.device.agent import TASK_ADAPTER  # noqa: E402
from tidings.device.config import Config, StoreConfig  # noqa: E402
from tidings.device.fleet import follow_fleet  # noqa: E402
from tidings.device.messages import Message  # noqa: E402
from tidings.device.store import Store  # noqa: E402
from tidings.federated.device_sync import local_versions  # noqa: E402
from tidings.models.registry import resolve_adapter  # noqa: E402
from tidings.server.dashboard import actions  # noqa: E402
from tidings.server.dashboard.snapshot import Console, snapshot  # noqa: E402
from tidings.server.operator import Operator  # noqa: E402
from tidings.server.registry import AdapterRegistry, arrays_equal  # noqa: E402
from tidings.server.settings import FederationSettings  # noqa: E402

pytestmark = pytest.mark.model
OPERATOR_HOST = "127.0.0.2"
TIDINGS = [sys.executable, "-m", "tidings.device.cli"]


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _device_store(path: Path, canary: str) -> Path:
    t = datetime(2026, 11, 20, 15, 0, tzinfo=timezone.utc)
    with Store(path) as store:
        for i in range(3):
            thread = f"family-{i}"
            messages = [Message(f"{thread}-a", thread, "Mom", f"Pick up Lily at {i + 4}:30, code {canary}?", t),
                        Message(f"{thread}-b", thread, "Alex", "Sure, on my way.", t)]
            store.add_training_example("summary", thread, messages,
                                       f"Mom asks Alex to pick up Lily at {i + 4}:30 ({canary}).", "accepted")
            store.add_training_example("reply", thread, messages[:1], f"On my way, {canary}.", "edited",
                                       author="Alex")
    return path


def _tidings(store: Path | None, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    prefix = [*TIDINGS, "--store", str(store)] if store else TIDINGS
    return subprocess.run([*prefix, *args], capture_output=True, text=True, cwd=cwd, env=_env(), timeout=300)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "TIDINGS_CONFIG"}


def _spawn(store: Path | None, args: list[str], log: Path, cwd: Path) -> subprocess.Popen:
    prefix = [*TIDINGS, "--store", str(store)] if store else TIDINGS
    with open(log, "wb") as out:
        return subprocess.Popen([*prefix, *args], stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=_env())


def _wait(condition, what: str, timeout_s: float = 300) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def _terminate(process: subprocess.Popen) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    return process.wait(timeout=60)


def test_operator_and_devices_on_separate_addresses_train_publish_verify_and_hot_swap(tmp_path: Path, engine,
                                                                                      embedded_model):
    operator_dir = tmp_path / "operator"
    operator = Operator(operator_dir, host=OPERATOR_HOST, port=_free_port(OPERATOR_HOST),
                        registry_port=_free_port(OPERATOR_HOST))
    addressing = ["--state-dir", str(operator_dir), "--host", OPERATOR_HOST, "--port", str(operator.port)]
    # Every version to every device at once: the canary rollout has its own test (test_federated_device.py).
    serve = _spawn(None, ["federation", "serve", *addressing, "--registry-port", str(operator.registry_port),
                          "--canary-fraction", "0"],
                   tmp_path / "serve.log", tmp_path)
    canaries = [f"CANARY-{uuid.uuid4().hex}" for _ in range(3)]
    stores = [_device_store(tmp_path / f"device-{i}" / "tidings.db", c) for i, c in enumerate(canaries)]
    intruder_store = _device_store(tmp_path / "intruder" / "tidings.db", "not-admitted")
    joins: list[subprocess.Popen] = []
    try:
        _wait(lambda: operator.serving() is not None or serve.poll() is not None, "the operator to serve", 180)
        assert serve.poll() is None, (tmp_path / "serve.log").read_text()
        serving = operator.serving()
        assert serving.registry_url == f"https://{OPERATOR_HOST}:{operator.registry_port}"
        ca, signing = operator_dir / "deploy" / "tls" / "ca.crt", operator_dir / "keys" / "signing.pub"

        keys = []
        for store in [*stores, intruder_store]:
            shown = _tidings(store, "federation", "device-key", cwd=tmp_path)
            assert shown.returncode == 0, shown.stderr
            key = store.parent / "federation-device" / "node-key.pub"
            assert shown.stdout == key.read_text() and shown.stdout.startswith("ecdsa-sha2-nistp384 ")
            keys.append(key)
            enrolled = _tidings(store, "federation", "enroll", "--operator-key", str(signing), "--ca", str(ca),
                                cwd=tmp_path)
            assert enrolled.returncode == 0, enrolled.stderr
        admitted = _tidings(None, "federation", "admit", *addressing, *map(str, keys[:3]), cwd=tmp_path)
        assert admitted.returncode == 0, admitted.stderr

        for i, store in enumerate([*stores, intruder_store]):
            host = f"127.0.0.{3 + i}"
            joins.append(_spawn(store, ["federation", "join", "--superlink", f"{OPERATOR_HOST}:{operator.port}",
                                        "--registry", serving.registry_url, "--host", host,
                                        "--port", str(_free_port(host)), "--poll", "3"],
                                store.parent / "join.log", tmp_path))
        intruder = joins.pop()
        assert intruder.wait(timeout=300) == 1
        said = (intruder_store.parent / "join.log").read_text()
        assert "does not know this device's key: ask the operator to admit it" in said
        _wait(lambda: len(operator.online_nodes()) == 3, "three devices online")
        assert all(j.poll() is None for j in joins)

        settings = FederationSettings(state_dir=str(operator_dir.resolve()), rounds=2, clients_per_round=3,
                                      min_available=3, local_steps=1, max_examples=4, max_seq_tokens=256,
                                      batch_tokens=256, threads=1,
                                      # A smoke-sized gate that only rejects a collapse (test_federated_sim forces
                                      # one): on 4 dialogues, one step of honest training has moved ROUGE-L by 9
                                      # points, far beyond the default's tolerance of 2.0 on 65.
                                      gate_dialogues=4, gate_threads=6, gate_rouge_tolerance=30.0)
        # The deployment defaults: SecAgg+ and the quality gate; DP is asked for, but 3 devices a round are too
        # few for its noise (dp_min_clients), so it is not applied and ε is infinite.
        assert settings.secagg and settings.gate and settings.dp and not settings.dp_applied
        assert operator.run(settings)["status"] == "finished:completed"

        registry = AdapterRegistry(operator_dir)
        versions = registry.versions()
        assert [(v.version, v.round, v.rejected) for v in versions] == [(0, 0, False), (1, 1, False), (2, 2, False)]
        assert all(v.gate["passed"] and v.gate["candidate"]["dialogues"] == 4 for v in versions[1:])
        assert not arrays_equal(registry.arrays(0), registry.arrays(2))
        assert registry.get(2).epsilon == -1.0
        devices = [store.parent / "federation-device" for store in stores]
        _wait(lambda: all(local_versions(d) and local_versions(d)[-1].version == 2 for d in devices),
              "every device to fetch version 2")
        for device in devices:
            assert (device / "global" / "0002" / "adapter.gguf").read_bytes() == registry.gguf(2).read_bytes()

        # A version changed after it was signed (someone with write access to the registry) is refused.
        tampered = registry.publish(registry.arrays(2), registry.get(2).adapter_spec, registry.get(2).layout, round=2,
                                    metrics={}, privacy_history=[], epsilon=0.0, delta=1e-5)
        with open(registry.gguf(tampered.version), "r+b") as f:
            f.seek(-64, os.SEEK_END)
            f.write(b"\x7f" * 64)
        for store in stores:
            log = store.parent / "join.log"
            _wait(lambda: "does not match its signed sha256: refused" in log.read_text(), f"{log} to refuse v3", 60)
        assert all(local_versions(d)[-1].version == 2 for d in devices)
        assert all(j.poll() is None for j in joins)

        # The operator's console sees the devices through the SuperLink, and revokes one.
        console = Console(operator, epsilon_budget=8.0)
        shown = snapshot(console)
        assert [d["status"] for d in shown["devices"]["devices"]] == ["online"] * 3
        assert {d["key_sha256"] for d in shown["devices"]["devices"]} == {
            hashlib.sha256(key.read_bytes()).hexdigest() for key in keys[:3]}
        assert [v["files"] for v in shown["versions"]] == ["intact"] * 3 + ["CHANGED"]
        revoked = shown["devices"]["devices"][0]
        gone = next(i for i, key in enumerate(keys) if hashlib.sha256(key.read_bytes()).hexdigest() ==
                    revoked["key_sha256"])
        actions.revoke(console, revoked["node_id"])
        after = {d["node_id"]: d for d in snapshot(console)["devices"]["devices"]}
        assert after[revoked["node_id"]]["revoked"] and after[revoked["node_id"]]["status"] == "unregistered"
        assert [after[n]["status"] for n in after if n != revoked["node_id"]] == ["online"] * 2
        assert joins[gone].wait(timeout=120) == 1  # the revoked device's session ends, and it says why
        assert "the operator may have revoked its key" in (stores[gone].parent / "join.log").read_text()
    finally:
        codes = [_terminate(j) for j in joins]
        served = _terminate(serve)
    assert codes == [1 if i == gone else 0 for i in range(3)] and served == 0
    assert operator.serving() is None

    try:  # each device's agent swaps its fetched version in beside the task adapter
        engine.load_adapter(resolve_adapter("tidings-task", embedded_model), TASK_ADAPTER)
        engine.set_adapters({TASK_ADAPTER: 1.0})
        for store in stores:
            follower = follow_fleet(Config(store=StoreConfig(path=store)), engine, TASK_ADAPTER)
            assert follower.stack.global_version == 2
            assert set(engine.active_adapters) == {TASK_ADAPTER, "global-v2"}
            engine.set_adapters({TASK_ADAPTER: 1.0})
            engine.unload_adapter("global-v2")
    finally:
        engine.set_adapters({})
        for name in list(engine.loaded_adapters):
            engine.unload_adapter(name)

    scanned = 0
    for path in operator_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            scanned += len(data)
            for canary in canaries:
                assert canary.encode() not in data, f"{canary} found in {path}"
    assert (operator_dir / "deploy" / "superlink.db").stat().st_size > 0 and scanned > 1e6
    for store, canary in zip(stores, canaries):  # the canaries were really there to be leaked
        with Store(store) as s:
            assert any(canary in example.output for example in s.training_examples())
