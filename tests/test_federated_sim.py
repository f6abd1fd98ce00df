"""Federated rounds on Flower's simulation engine with the real model and real (tiny) LoRA training."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr", reason="federation needs the `train` extra")

from flwr.app import Context, Message  # noqa: E402
from flwr.app.message_type import MessageType  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays  # noqa: E402
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS  # noqa: E402
from flwr.compat.common import recorddict_compat as compat  # noqa: E402

from tidings.federated.client_app import client_fn, privacy_mod  # noqa: E402
from tidings.federated.simulation import simulate  # noqa: E402
from tidings.server.registry import AdapterRegistry, arrays_equal  # noqa: E402
from tidings.server.settings import FederationSettings  # noqa: E402

pytestmark = pytest.mark.model
REPO = Path(__file__).resolve().parents[1]
TINY = dict(local_steps=1, max_examples=4, max_seq_tokens=256, batch_tokens=256)


def misbehaving_mod(msg: Message, context: Context, call_next) -> Message:
    """Device 0 sends NaN in round 1 and a huge update in round 2; device 1 drops out in round 2."""
    if msg.metadata.message_type != MessageType.TRAIN or RECORD_KEY_CONFIGS in msg.content.config_records:
        return call_next(msg, context)
    device = int(context.node_config["partition-id"])
    round_ = int(compat.recorddict_to_fitins(msg.content, keep_input=True).config["global-round"])
    if device == 1 and round_ == 2:
        raise ConnectionError("device 1 went away mid-round")
    reply = call_next(msg, context)
    if device == 0:
        fit_res = compat.recorddict_to_fitres(reply.content, keep_input=True)
        values = parameters_to_ndarrays(fit_res.parameters)
        if round_ == 1:
            values[0] = np.full_like(values[0], np.nan)  # the int8 payload's scales come last: poison the data
            values[-1] = np.full_like(values[-1], np.nan)
        else:
            values[-1] = values[-1] * 1e4  # every per-array scale blown up: a far too large update
        fit_res.parameters = ndarrays_to_parameters(values)
        reply.content = compat.fitres_to_recorddict(fit_res, keep_input=True)
    return reply


def test_rounds_reject_bad_updates_survive_a_dropout_and_publish_versions(tmp_path: Path, caplog):
    caplog.set_level(logging.WARNING, logger="tidings")
    settings = FederationSettings(state_dir=str(tmp_path / "state"), rounds=2, clients_per_round=3, min_available=3,
                                  secagg=False, dp=True, dp_min_clients=1, noise_multiplier=0.1,
                                  clipping_norm=1.0, compression="int8", gate=False, **TINY)
    app = ClientApp(client_fn=client_fn, mods=[misbehaving_mod, privacy_mod])
    records = simulate(settings, devices=3, client_app=app)

    assert [r.round for r in records] == [1, 2]
    first, second = records
    assert (first.clients, first.rejected, first.failures) == (2, 1, 0)
    assert "NaN" in first.rejections[0]["reason"]
    assert (second.clients, second.rejected, second.failures) == (1, 1, 1)
    assert "above the bound" in second.rejections[0]["reason"]
    assert any("rejected the update" in r.getMessage() and "NaN" in r.getMessage() for r in caplog.records)
    # int8 of the update: about one byte per value (46,080 values of B: A stays frozen) plus framing.
    assert 46_080 <= first.upload_bytes_per_client < 0.1e6
    assert 0 < first.epsilon < second.epsilon

    registry = AdapterRegistry(tmp_path / "state")
    versions = registry.versions()
    assert [(v.version, v.round) for v in versions] == [(0, 0), (1, 1), (2, 2)]
    assert all(registry.verify(v.version) for v in versions)
    assert not arrays_equal(registry.arrays(0), registry.arrays(2))
    # FFA-LoRA: only B was trained and sent; every version keeps the seeded A.
    v0, v2 = registry.arrays(0), registry.arrays(2)
    assert all(np.array_equal(v0[n], v2[n]) for n in v0 if ".lora_A." in n)
    assert any(not np.array_equal(v0[n], v2[n]) for n in v0 if ".lora_B." in n)
    assert versions[-1].privacy_history == [[0.1, 1.0], [0.1, 1.0]]
    lines = (tmp_path / "state" / "rounds.jsonl").read_text().splitlines()
    assert [json.loads(line)["adapter_version"] for line in lines] == [1, 2]


def test_a_killed_server_resumes_from_its_last_checkpoint(tmp_path: Path):
    state = tmp_path / "state"
    command = [sys.executable, "-m", "tidings.device.cli", "federation", "simulate", "--devices", "3", "--rounds", "2",
               "--no-secagg", "--no-gate", "--dp-min-clients", "1", "--local-steps", "1", "--state-dir", str(state), "--json"]
    env = {**os.environ, "TIDINGS_CONFIG": str(REPO / "tidings.toml")}
    first = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, start_new_session=True)
    line = next(text for text in first.stdout if text.startswith("{"))  # blocks until round 1 is published
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert json.loads(line)["round"] == 1
    assert AdapterRegistry(state).newest().round == 1

    second = subprocess.run(command, capture_output=True, text=True, env=env)
    assert second.returncode == 0, second.stderr[-2000:]
    rounds = [json.loads(line) for line in second.stdout.splitlines() if line.startswith("{")]
    assert [r["round"] for r in rounds] == [2]  # round 1 is not redone, and no round is lost
    assert rounds[0]["adapter_version"] == 2
    assert [v.round for v in AdapterRegistry(state).versions()] == [0, 1, 2]
    assert rounds[0]["epsilon"] > json.loads(line)["epsilon"]  # the privacy spent keeps counting


def test_a_round_that_regresses_is_kept_rejected_and_devices_stay_on_the_last_good_version(tmp_path: Path):
    from tidings.federated.device_sync import fetch_newest, pin_operator_key
    from tidings.federated.task import embedded_model

    gate = dict(gate=True, gate_dialogues=4, gate_threads=6)
    # An absurd learning rate, and no bound on the update that could catch it before the gate does.
    settings = FederationSettings(state_dir=str(tmp_path / "state"), rounds=1, clients_per_round=3, min_available=3,
                                  secagg=False, dp=False, learning_rate=5.0, max_update_norm=1e9, **TINY, **gate)
    [record] = simulate(settings, devices=3)

    assert record.clients == 3 and record.rejected == 0  # every update arrived and was well-formed
    assert not record.published and record.adapter_version == 0 and record.candidate_version == 1
    verdict = record.gate
    assert not verdict["passed"] and verdict["reasons"]
    task = verdict["references"]["the task adapter alone"]
    assert verdict["candidate"]["rouge_l"] < task["rouge_l"] - 1.0  # it really is worse, not a tolerance quirk
    assert (task["dialogues"], task["threads"]) == (4, 6)

    registry = AdapterRegistry(tmp_path / "state")
    assert [(v.version, v.rejected) for v in registry.versions()] == [(0, False), (1, True)]
    assert registry.newest().version == 0 and registry.latest().round == 1
    assert registry.get(1).gate["candidate"] == verdict["candidate"]  # kept with its figures
    device = tmp_path / "device"
    pin_operator_key(device, registry.public_key_pem)
    assert fetch_newest(registry.root, device, base_sha256=embedded_model().spec.sha256).version == 0
    with pytest.raises(ValueError, match="rejected by the quality gate"):
        registry.rollback(to=1)

    # The next round starts from the last good version, and its figures are cached for later rounds.
    cached = sorted(p.name for p in (tmp_path / "state" / "gate").iterdir())
    assert cached == ["task-d4-t6.json"]
    lines = [json.loads(line) for line in (tmp_path / "state" / "rounds.jsonl").read_text().splitlines()]
    assert [(r["round"], r["published"], r["candidate_version"]) for r in lines] == [(1, False, 1)]
