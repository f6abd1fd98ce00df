"""The device side: training data with retention, fetching and hot-swapping global versions, rollback,
a personal adapter on top, and the upload encodings' measured loss."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr", reason="federation needs the `train` extra")

from tidings.device.messages import Message  # noqa: E402
from tidings.device.store import Store  # noqa: E402
from tidings.federated import compression  # noqa: E402
from tidings.federated.adapter import AdapterSpec  # noqa: E402
from tidings.federated.device_sync import AdapterStack, IntegrityError, fetch_newest  # noqa: E402
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
    registry = AdapterRegistry(tmp_path / "server")
    v0 = layout.initial(seed=0)
    rng = np.random.default_rng(1)
    v1 = {k: (v + rng.normal(0, 0.5, v.shape).astype(np.float32)) if ".lora_B." in k else v for k, v in v0.items()}
    for round_, arrays in enumerate((v0, v1)):
        registry.publish(arrays, SPEC, layout.fingerprint, round=round_, metrics={}, privacy_history=[],
                         epsilon=0.0, delta=1e-5)
    device = tmp_path / "device"
    stack = AdapterStack(engine)
    try:
        stack.set_task(resolve_adapter("tidings-task", embedded_model))
        task_only = _greedy(engine)
        stack.set_global(fetch_newest(registry.root, device))
        assert stack.active == {"task": 1.0, "global-v1": 1.0}
        with_v1 = _greedy(engine)
        assert with_v1 != task_only  # the new global adapter is really applied

        rolled = registry.rollback(to=0)
        assert (rolled.version, rolled.rolled_back_to) == (2, 0)
        assert arrays_equal(registry.arrays(2), v0)
        stack.set_global(fetch_newest(registry.root, device))
        assert set(engine.loaded_adapters) == {"task", "global-v2"}  # the old version was unloaded after the swap
        assert _greedy(engine) == task_only  # version 0 (B = 0) changes nothing

        store = tmp_path / "store.db"
        with Store(store) as s:
            for i in range(3):
                s.add_training_example("summary", f"t{i}", _messages(f"t{i}", f"Pick up Lily at {i + 4}:30?"),
                                       f"Mom wants Lily picked up at {i + 4}:30.", "edited")
        result = personalize(store, registry.root, device, steps=1)
        assert result["finished"] and result["global_version"] == 2
        stack.set_personal(Path(result["gguf"]), "g2")
        assert stack.active == {"task": 1.0, "global-v2": 1.0, "personal-g2": 1.0}
    finally:
        engine.set_adapters({})
        for name in list(engine.loaded_adapters):
            engine.unload_adapter(name)


def test_a_tampered_version_is_refused(embedded_model, tmp_path: Path):
    layout = layout_for(embedded_model, SPEC)
    registry = AdapterRegistry(tmp_path / "server")
    registry.publish(layout.initial(), SPEC, layout.fingerprint, round=0, metrics={}, privacy_history=[],
                     epsilon=0.0, delta=1e-5)
    with open(registry.gguf(0), "r+b") as f:
        f.seek(-8, 2)
        f.write(b"\xff" * 8)  # the last tensor is a zero B: make it something else
    with pytest.raises(IntegrityError):
        fetch_newest(registry.root, tmp_path / "device")
