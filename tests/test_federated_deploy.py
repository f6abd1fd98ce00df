"""Acceptance: a real deployment on 127.0.0.1 (SuperLink + 3 SuperNodes, TLS, SuperNode auth, SecAgg+, DP).

Two rounds with the real model and real LoRA training (one step per device).
Each device's store holds a unique canary string in its messages and in what
the wearer accepted; after the run, no byte the server side received or
stored (the SuperLink's database with every message it relayed, the
ServerApp's versions and round log, every log, the app bundle) contains any
canary.
"""

from __future__ import annotations

import socket
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="federation needs the `train` extra")

from tidings.device.messages import Message  # noqa: E402
from tidings.device.store import Store  # noqa: E402
from tidings.federated.device_sync import AdapterStack, fetch_newest, pin_operator_key  # noqa: E402
from tidings.server.credentials import make_node_key  # noqa: E402
from tidings.server.deploy import Deployment, down, run, up  # noqa: E402
from tidings.server.registry import AdapterRegistry, arrays_equal  # noqa: E402
from tidings.server.settings import FederationSettings  # noqa: E402

pytestmark = pytest.mark.model


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
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


def test_a_real_deployment_trains_publishes_and_never_sees_device_text(tmp_path: Path, engine, embedded_model):
    canaries = [f"CANARY-{uuid.uuid4().hex}" for _ in range(3)]
    stores = [_device_store(tmp_path / "devices" / f"d{i}.db", c) for i, c in enumerate(canaries)]
    deployment = Deployment(tmp_path / "operator", port=_free_port())
    try:
        up(deployment, 3, stores)
        while len(deployment.online_nodes()) < 3:
            time.sleep(1)

        intruder, _ = make_node_key(tmp_path / "intruder" / "key")  # a key nobody registered
        rejected = deployment.start_supernode(9, intruder, "partition-id=0 num-partitions=1")
        assert rejected.wait(timeout=300) != 0  # the log says "Exit Code: 305" (could not activate)
        assert "Failed to activate SuperNode" in (deployment.logs / "supernode-9.log").read_text()
        assert "No SuperNode found with the given public key" in (deployment.logs / "superlink.log").read_text()
        assert len(deployment.online_nodes()) == 3

        settings = FederationSettings(state_dir=str(deployment.state_dir.resolve()), rounds=2, clients_per_round=3,
                                      min_available=3, local_steps=1, max_examples=4, max_seq_tokens=256,
                                      batch_tokens=256, threads=1)
        assert settings.secagg and settings.dp  # the deployment defaults
        record = run(deployment, settings)
        assert record["status"] == "finished:completed"
    finally:
        down(deployment)

    registry = AdapterRegistry(deployment.state_dir)
    versions = registry.versions()
    assert [(v.version, v.round) for v in versions] == [(0, 0), (1, 1), (2, 2)]
    assert not arrays_equal(registry.arrays(0), registry.arrays(2))
    assert 0 < versions[1].epsilon < versions[2].epsilon

    stack = AdapterStack(engine)
    try:
        pin_operator_key(tmp_path / "device-cache", registry.public_key_pem)
        stack.set_global(fetch_newest(registry.root, tmp_path / "device-cache", base_sha256=embedded_model.spec.sha256))
        assert stack.active == {"global-v2": 1.0}
    finally:
        engine.set_adapters({})
        for name in list(engine.loaded_adapters):
            engine.unload_adapter(name)

    scanned = 0
    for path in deployment.state_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            scanned += len(data)
            for canary in canaries:
                assert canary.encode() not in data, f"{canary} found in {path}"
    assert (deployment.root / "superlink.db").stat().st_size > 0 and scanned > 1e6
    for store, canary in zip(stores, canaries):  # the canaries were really there to be leaked
        with Store(store) as s:
            assert any(canary in example.output for example in s.training_examples())
