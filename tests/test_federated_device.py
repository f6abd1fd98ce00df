"""The device side: training data with retention, fetching and hot-swapping global versions, rollback,
a personal adapter on top, and the upload encodings' measured loss."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr", reason="federation needs the `train` extra")

from tidings.device.fleet import FleetFollower  # noqa: E402
from tidings.device.messages import Message  # noqa: E402
from tidings.device.store import Store  # noqa: E402
from tidings.federated import compression  # noqa: E402
from tidings.federated.adapter import AdapterSpec  # noqa: E402
from tidings.federated.device_sync import AdapterStack, IntegrityError, fetch_newest, pin_operator_key  # noqa: E402,E501
from tidings.federated.personal import personalize  # noqa: E402
from tidings.federated.task import layout_for  # noqa: E402
from tidings.models.registry import resolve_adapter  # noqa: E402
from tidings.device.llm.prompts import user_turn  # noqa: E402
from tidings.server.registry import AdapterRegistry, arrays_equal  # noqa: E402

pytestmark = pytest.mark.model
SPEC = AdapterSpec()


def _messages(thread: str, text: str) -> list[Message]:
    t = datetime(2026, 11, 20, 15, 0, tzinfo=timezone.utc)
    return [Message(f"{thread}-1", thread, "Mom", text, t), Message(f"{thread}-2", thread, "Alex", "Sure.", t)]


def test_training_examples_keep_their_sources_and_obey_the_retention_limit(tmp_path: Path):
    with Store(tmp_path / "s.db") as store:
        for i in range(5):
            store.add_training_example("summary", f"t{i}", _messages(f"t{i}", f"Pick up Lily at {i}?"),
                                       f"Mom asks Alex to pick up Lily at {i}.", "accepted", keep=3)
        kept = store.training_examples()
        assert [e.thread for e in kept] == ["t4", "t3", "t2"]
        assert kept[0].messages[0].text == "Pick up Lily at 4?" and kept[0].outcome == "accepted"
        assert store.prune_training_examples(keep=10, max_age_days=0) == 3  # all older than "now"
        assert store.training_examples() == []


def test_with_a_frozen_a_only_b_travels_and_a_comes_back_from_its_seed():
    from tidings.federated.adapter import AdapterLayout

    config = {"num_hidden_layers": 18, "hidden_size": 640, "num_attention_heads": 4, "num_key_value_heads": 1,
              "head_dim": 256}
    frozen = AdapterLayout.for_model(SPEC, config)
    plain = AdapterLayout.for_model(AdapterSpec(frozen_a=False), config)
    assert SPEC.frozen_a and all(".lora_B." in name for name in frozen.names)
    assert frozen.size == 18 * SPEC.rank * (1024 + 256) == 46_080 and plain.size == 18 * SPEC.rank * (2 * 640 + 1280)
    assert frozen.fingerprint != plain.fingerprint  # a device training A too is refused by the server
    start = frozen.initial(seed=7)
    assert all(np.array_equal(start[n], frozen.initial(seed=0)[n]) for n in start)  # A is the same on every device
    sent = [v + 1.0 for v in frozen.to_list(start)]
    received = frozen.from_list(sent)
    assert set(received) == set(start)
    assert all(np.array_equal(received[n], start[n]) for n in start if ".lora_A." in n)
    assert all(np.array_equal(received[n], start[n] + 1.0) for n in start if ".lora_B." in n)


def test_int8_and_fp16_uploads_lose_little_of_the_update():
    rng = np.random.default_rng(0)
    base = [rng.normal(0, 0.05, (4, 640)).astype(np.float32), np.zeros((1024, 4), np.float32)]
    new = [b + rng.normal(0, 1e-3, b.shape).astype(np.float32) for b in base]
    assert compression.encode(new, base, "int8").nbytes < 0.26 * compression.encode(new, base, "none").nbytes
    assert compression.relative_error(new, base, "int8") < 0.02
    assert compression.relative_error(new, base, "fp16") < 1e-3


def _greedy(engine, n: int = 12) -> str:
    engine.reset_cache()
    return engine.complete(user_turn(engine.prompt_format, "Mom: Pick up Lily at 5:30?"), max_tokens=n).text


def test_a_device_hot_swaps_new_versions_rolls_back_and_stacks_its_personal_adapter(engine, embedded_model,
                                                                                      tmp_path: Path):
    layout = layout_for(embedded_model, SPEC)
    base = embedded_model.spec.sha256
    registry = AdapterRegistry(tmp_path / "server", base_sha256=base)
    v0 = layout.initial(seed=0)
    rng = np.random.default_rng(1)
    v1 = {k: (v + rng.normal(0, 0.5, v.shape).astype(np.float32)) if ".lora_B." in k else v for k, v in v0.items()}
    for round_, arrays in enumerate((v0, v1)):
        registry.publish(arrays, SPEC, layout.fingerprint, round=round_, metrics={}, privacy_history=[],
                         epsilon=0.0, delta=1e-5)
    device = tmp_path / "device"
    pin_operator_key(device, registry.public_key_pem)
    stack = AdapterStack(engine)
    try:
        stack.set_task(resolve_adapter("tidings-task", embedded_model))
        task_only = _greedy(engine)
        stack.set_global(fetch_newest(registry.root, device, base_sha256=base))
        assert stack.active == {"task": 1.0, "global-v1": 1.0}
        with_v1 = _greedy(engine)
        assert with_v1 != task_only  # the new global adapter is really applied

        rolled = registry.rollback(to=0)
        assert (rolled.version, rolled.rolled_back_to) == (2, 0)
        assert arrays_equal(registry.arrays(2), v0)
        stack.set_global(fetch_newest(registry.root, device, base_sha256=base))
        assert set(engine.loaded_adapters) == {"task", "global-v2"}  # the old version was unloaded after the swap
        assert _greedy(engine) == task_only  # version 0 (B = 0) changes nothing

        store = tmp_path / "store.db"
        with Store(store) as s:
            for i in range(3):
                s.add_training_example("summary", f"t{i}", _messages(f"t{i}", f"Pick up Lily at {i + 4}:30?"),
                                       f"Mom wants Lily picked up at {i + 4}:30.", "edited")
        with pytest.raises(ValueError, match="no replies"):  # it learns how the wearer writes, from replies
            personalize(store, registry.root, device, steps=1)
        with Store(store) as s:
            for i in range(3):
                s.add_training_example("reply", f"r{i}", _messages(f"r{i}", f"Can you get Lily at {i + 4}?"),
                                       "on my way x", "accepted", author="Alex")
        result = personalize(store, registry.root, device, steps=1)
        assert result["finished"] and result["global_version"] == 2 and result["examples"] == 3
        FleetFollower(stack, device).refresh(force=True)  # what the running agent does between turns
        assert stack.active == {"task": 1.0, "global-v2": 1.0}  # summaries: only what the quality gate measured
        [personal] = [n for n in engine.loaded_adapters if n.startswith("personal-")]
        with stack.replying():
            assert stack.active == {"task": 1.0, "global-v2": 1.0, personal: 1.0}
        assert stack.active == {"task": 1.0, "global-v2": 1.0}
    finally:
        engine.set_adapters({})
        for name in list(engine.loaded_adapters):
            engine.unload_adapter(name)


def _signed_registry(embedded_model, root: Path, versions: int = 1) -> AdapterRegistry:
    layout = layout_for(embedded_model, SPEC)
    registry = AdapterRegistry(root, base_sha256=embedded_model.spec.sha256)
    rng = np.random.default_rng(3)
    for round_ in range(versions):
        arrays = {k: v + rng.normal(0, 0.1, v.shape).astype(np.float32) if ".lora_B." in k else v
                  for k, v in layout.initial().items()}
        registry.publish(arrays, SPEC, layout.fingerprint, round=round_, metrics={}, privacy_history=[],
                         epsilon=0.0, delta=1e-5)
    return registry


def _enrolled(registry: AdapterRegistry, device: Path, base: str) -> int:
    """A device that enrolled with this operator and runs version 0."""
    pin_operator_key(device, registry.public_key_pem)
    return fetch_newest(registry.root, device, base_sha256=base).version


def _tamper_file(registry: AdapterRegistry) -> None:
    with open(registry.gguf(registry.newest().version), "r+b") as f:
        f.seek(-8, 2)
        f.write(b"\xff" * 8)


def _tamper_manifest(registry: AdapterRegistry) -> None:
    meta = registry.dir(registry.newest().version) / "version.json"
    meta.write_text(meta.read_text().replace('"round": 1', '"round": 7'))


def _other_operator(registry: AdapterRegistry) -> None:
    """Whoever can write the registry publishes a version of their own, signed with their own key."""
    from tidings.server.signing import OperatorKey

    newest = registry.newest()
    impostor = OperatorKey.load_or_create(registry.root.parent / "impostor-keys")
    manifest = (registry.dir(newest.version) / "version.json").read_bytes()
    (registry.dir(newest.version) / "version.sig").write_bytes(impostor.sign(manifest))


def _replay_older(registry: AdapterRegistry) -> None:
    """Version 0, validly signed, served again as the newest in place of version 1."""
    import shutil

    newest = registry.dir(registry.newest().version)
    shutil.rmtree(newest)
    shutil.copytree(registry.dir(0), newest)


@pytest.mark.parametrize(("attack", "refusal"), [
    (_tamper_file, "does not match its signed sha256"),
    (_tamper_manifest, "not signed by the operator key"),
    (_other_operator, "not signed by the operator key"),
])
def test_a_version_the_operator_did_not_publish_is_refused_and_the_device_keeps_its_own(
        embedded_model, tmp_path: Path, attack, refusal):
    base = embedded_model.spec.sha256
    registry = _signed_registry(embedded_model, tmp_path / "server", versions=1)
    device = tmp_path / "device"
    assert _enrolled(registry, device, base) == 0
    layout = layout_for(embedded_model, SPEC)
    registry.publish(registry.arrays(0), SPEC, layout.fingerprint, round=1, metrics={}, privacy_history=[],
                     epsilon=0.0, delta=1e-5)
    attack(registry)
    with pytest.raises(IntegrityError, match=refusal):
        fetch_newest(registry.root, device, base_sha256=base)
    # Only what it had, nothing half-copied, and still the version it runs.
    assert sorted(p.name for p in (device / "global").iterdir()) == ["0000", "current.json"]
    assert json.loads((device / "global" / "current.json").read_text()) == {"version": 0}


def test_a_replayed_older_version_is_refused(embedded_model, tmp_path: Path):
    base = embedded_model.spec.sha256
    registry = _signed_registry(embedded_model, tmp_path / "server", versions=2)
    device = tmp_path / "device"
    assert _enrolled(registry, device, base) == 1
    layout = layout_for(embedded_model, SPEC)
    registry.publish(registry.arrays(1), SPEC, layout.fingerprint, round=2, metrics={}, privacy_history=[],
                     epsilon=0.0, delta=1e-5)
    _replay_older(registry)  # version 2's folder now holds version 0, with version 0's true signature
    with pytest.raises(IntegrityError, match="older than version 1 on this device: a replayed version"):
        fetch_newest(registry.root, device, base_sha256=base)
    assert sorted(p.name for p in (device / "global").iterdir()) == ["0001", "current.json"]


def test_a_version_for_another_base_model_or_without_enrolment_is_refused(embedded_model, tmp_path: Path):
    registry = _signed_registry(embedded_model, tmp_path / "server")
    with pytest.raises(IntegrityError, match="no operator key pinned"):
        fetch_newest(registry.root, tmp_path / "device", base_sha256=embedded_model.spec.sha256)
    pin_operator_key(tmp_path / "device", registry.public_key_pem)
    with pytest.raises(IntegrityError, match="is for base model"):
        fetch_newest(registry.root, tmp_path / "device", base_sha256="0" * 64)
    with pytest.raises(IntegrityError, match="already trusts another operator key"):
        from tidings.server.signing import OperatorKey

        pin_operator_key(tmp_path / "device", OperatorKey.load_or_create(tmp_path / "other").public_pem)


def test_the_operator_key_is_private_and_enrolment_goes_through_the_cli(embedded_model, tmp_path: Path):
    import subprocess
    import sys

    registry = _signed_registry(embedded_model, tmp_path / "server")
    keys = registry.root / "keys"
    assert (keys / "signing.pem").stat().st_mode & 0o777 == 0o600 and keys.stat().st_mode & 0o777 == 0o700
    printed = subprocess.run([sys.executable, "-m", "tidings.device.cli", "federation", "signing-key",
                              "--state-dir", str(registry.root)], capture_output=True, timeout=120)
    assert printed.returncode == 0 and printed.stdout == (keys / "signing.pub").read_bytes()
    store = tmp_path / "device" / "tidings.db"
    enrolled = subprocess.run([sys.executable, "-m", "tidings.device.cli", "--store", str(store), "federation",
                               "enroll", "--operator-key", str(keys / "signing.pub")], capture_output=True,
                              text=True, timeout=120)
    assert enrolled.returncode == 0, enrolled.stderr
    fetched = subprocess.run([sys.executable, "-m", "tidings.device.cli", "--store", str(store), "federation",
                              "fetch", "--registry", str(registry.root)], capture_output=True, text=True,
                             timeout=300)
    assert fetched.returncode == 0 and json.loads(fetched.stdout)["version"] == 0, fetched.stderr
    _tamper_file(registry)
    shutil_target = tmp_path / "device" / "federation-device" / "global" / "0000"
    import shutil

    shutil.rmtree(shutil_target)  # the device would fetch it again: now tampered
    refused = subprocess.run([sys.executable, "-m", "tidings.device.cli", "--store", str(store), "federation",
                              "fetch", "--registry", str(registry.root)], capture_output=True, text=True,
                             timeout=300)
    assert refused.returncode == 1 and "does not match its signed sha256" in refused.stderr


def test_versions_are_fetched_over_https_only_from_the_pinned_operator_ca(embedded_model, tmp_path: Path):
    from tidings.federated.device_sync import RegistryUnreachable, pin_operator_ca
    from tidings.server.credentials import make_tls
    from tidings.server.registry_http import RegistryServer

    registry = _signed_registry(embedded_model, tmp_path / "server", versions=2)
    tls = make_tls(tmp_path / "server" / "tls", hosts=("127.0.0.2",))
    endpoint = RegistryServer(registry, "127.0.0.2", 0, tls["cert"], tls["key"]).start()
    base = embedded_model.spec.sha256
    try:
        assert endpoint.url.startswith("https://127.0.0.2:")
        stranger = tmp_path / "stranger"  # pinned the signing key, but another operator's CA
        pin_operator_key(stranger, registry.public_key_pem)
        pin_operator_ca(stranger, make_tls(tmp_path / "other-tls", hosts=("127.0.0.2",))["ca"].read_bytes())
        with pytest.raises(RegistryUnreachable, match="CERTIFICATE_VERIFY_FAILED"):
            fetch_newest(endpoint.url, stranger, base_sha256=base)
        assert not (stranger / "global").exists()

        device = tmp_path / "device"
        pin_operator_key(device, registry.public_key_pem)
        with pytest.raises(IntegrityError, match="no operator CA pinned"):
            fetch_newest(endpoint.url, device, base_sha256=base)
        pin_operator_ca(device, tls["ca"].read_bytes())
        local = fetch_newest(endpoint.url, device, base_sha256=base)
        assert local.version == 1
        assert local.gguf.read_bytes() == registry.gguf(1).read_bytes()
        with pytest.raises(IntegrityError, match="must be reached over https"):
            fetch_newest(endpoint.url.replace("https", "http"), device, base_sha256=base)

        (registry.dir(1) / "adapter.gguf").write_bytes(b"tampered")  # an endpoint serving a swapped file
        (device / "global" / "0001").rename(device / "global" / ".gone")
        with pytest.raises(IntegrityError, match="does not match its signed sha256"):
            fetch_newest(endpoint.url, device, base_sha256=base)
    finally:
        endpoint.close()
    with pytest.raises(RegistryUnreachable, match="cannot reach the registry"):
        fetch_newest(endpoint.url, device, base_sha256=base)


def _summaries(store_path: Path, sources: list[str]) -> None:
    with Store(store_path) as store:
        for i, source in enumerate(sources):
            store.record_summary(f"t{i}", [], {"source": source, "summary": "..."})


def test_a_canary_with_bad_health_is_rolled_back_and_a_healthy_one_promoted(embedded_model, tmp_path: Path):
    from tidings.federated.device_sync import (RegistryUnreachable, current_version, in_canary, open_registry,
                                               pin_operator_ca)
    from tidings.federated.join import DeviceNode
    from tidings.server.credentials import make_tls
    from tidings.server.registry_http import RegistryServer
    from tidings.server.rollout import Rollout, RolloutPolicy

    registry = _signed_registry(embedded_model, tmp_path / "server", versions=1)
    rollout = Rollout(registry, RolloutPolicy(fraction=0.5, min_summaries=10, tolerance=0.05))
    rollout.sync()
    assert (rollout.state.promoted, rollout.state.canary) == (0, None)
    tls = make_tls(tmp_path / "server" / "tls", hosts=("127.0.0.2",))
    endpoint = RegistryServer(registry, "127.0.0.2", 0, tls["cert"], tls["key"], rollout).start()
    base = embedded_model.spec.sha256
    devices = []
    try:
        for i in range(8):
            folder = tmp_path / f"device-{i}" / "federation-device"
            folder.mkdir(parents=True)
            (folder / "canary-secret").write_bytes(bytes([i]) * 32)  # fixed draws: the test cannot flip
            pin_operator_key(folder, registry.public_key_pem)
            pin_operator_ca(folder, tls["ca"].read_bytes())
            node = DeviceNode(folder, folder.parent / "tidings.db", "unused:0", endpoint.url, base)
            assert node.fetch().version == 0
            node.report_health()  # the first call only marks where this version's window starts
            devices.append(node)

        def publish_candidate() -> int:
            _signed_registry(embedded_model, registry.root, versions=1)  # one more signed version
            rollout.sync()
            return registry.newest().version

        first_rollout = rollout.signed()
        canary = publish_candidate()
        assert (rollout.state.promoted, rollout.state.canary, rollout.state.fraction) == (0, canary, 0.5)
        took = [node.fetch() is not None for node in devices]
        assert took == [in_canary(node.device_dir, canary, 0.5) for node in devices]
        assert 0 < sum(took) < len(devices)  # some devices run the canary, the others stay on version 0
        for node, on_canary in zip(devices, took):
            assert current_version(node.device_dir).version == (canary if on_canary else 0)
            node.report_health()  # a new version on the canary devices: their window starts now

        for node, on_canary in zip(devices, took):  # the canary's drafts fail the validators far more often
            _summaries(node.store, ["fallback"] * 4 + ["model"] if on_canary else ["model"] * 4 + ["fallback"])
            node.report_health()
        assert rollout.health[str(canary)]["summaries"] == 5 * sum(took)
        assert rollout.health[str(canary)]["accepted_summaries"] == sum(took)
        assert rollout.decide() == "rolled back"
        restored = registry.newest()
        assert restored.rolled_back_to == 0 and arrays_equal(registry.arrays(restored.version), registry.arrays(0))
        assert (rollout.state.promoted, rollout.state.canary) == (restored.version, None)
        assert rollout.state.withdrawn[0]["version"] == canary and rollout.state.withdrawn[0]["reasons"]
        for node in devices:  # every device, the canary ones too, moves on to the restored adapter
            node.fetch()
            assert current_version(node.device_dir).version == restored.version

        healthy = publish_candidate()
        took = [node.fetch() is not None for node in devices]
        assert any(took) and rollout.state.canary == healthy
        for node in devices:
            node.report_health()
            _summaries(node.store, ["model"] * 4 + ["fallback"])
            node.report_health()
        assert rollout.decide() == "promoted"
        assert (rollout.state.promoted, rollout.state.canary) == (healthy, None)
        for node in devices:
            node.fetch()
            assert current_version(node.device_dir).version == healthy

        with pytest.raises(RegistryUnreachable, match="400"):  # a report no device could have made is turned away
            open_registry(endpoint.url, devices[0].device_dir).report_health(
                {"version": healthy, "summaries": 1, "accepted_summaries": 5, "replies": 0, "accepted_replies": 0})
        manifest, signature = registry.root / "rollout.json", registry.root / "rollout.sig"
        manifest.write_bytes(first_rollout[0])  # the operator's first rollout, validly signed, served again
        signature.write_bytes(first_rollout[1])
        with pytest.raises(IntegrityError, match="a replayed rollout"):
            fetch_newest(endpoint.url, devices[0].device_dir, base_sha256=base)
        # The served rollout is now one the operator never signed.
        manifest.write_bytes(manifest.read_bytes().replace(b'"canary": null', b'"canary": 0'))
        with pytest.raises(IntegrityError, match="rollout is not signed"):
            fetch_newest(endpoint.url, devices[0].device_dir, base_sha256=base)
    finally:
        endpoint.close()


def test_operator_and_device_commands_say_what_is_missing_instead_of_failing(tmp_path: Path):
    import subprocess
    import sys

    def tidings(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "tidings.device.cli", *args], capture_output=True, text=True,
                              cwd=tmp_path, timeout=120)

    for command in (["federation", "admit", "--state-dir", str(tmp_path / "op"), str(tmp_path / "k.pub")],
                    ["federation", "run", "--state-dir", str(tmp_path / "op")]):
        done = tidings(*command)
        assert done.returncode == 2 and "nothing is served from" in done.stderr and "Traceback" not in done.stderr
    done = tidings("--store", str(tmp_path / "d" / "t.db"), "federation", "join", "--superlink", "127.0.0.2:1")
    assert done.returncode == 2 and "has not enrolled with an operator" in done.stderr
    done = tidings("--store", str(tmp_path / "d" / "t.db"), "federation", "join")
    assert done.returncode == 2 and "no SuperLink to join" in done.stderr
