"""Federated benchmark: the federated adapter against the same data trained centrally, its upload, and DP's price.

    python -m tidings.bench.federated_bench --out bench/results           # ~15 min on 2 idle cores (estimate)
    python -m tidings.bench.federated_bench --quick --out /tmp/fedbench  # ~4 min on 2 idle cores

A population of virtual devices (default 100; non-IID partitions of the
training splits: Dirichlet corpus mix and one of three wearer styles, see
federated/partitions.py) runs on Flower's simulation engine with the real
ServerApp and ClientApp (federated/simulation.py), a small sample of devices
per round, few rounds and a few local steps. Three configurations start from
the same initial adapter (version 0: PEFT's init, no effect) and train the
same devices in the same rounds with the same seeds:

1. federated: FedAvg, no DP, int8 upload (validated by the server);
2. federated + DP: central DP (client-side clipping, Gaussian noise on the
   mean) with the accountant's ε at δ = 1e-5 for this population;
3. central: the union of the sampled devices' data, trained in one place with
   `train_local` (the devices' own training code) as FedAvg's large-batch
   equivalent: rounds x local steps optimizer steps, each over the batches
   of a round's devices together (same examples, same sequential updates).

Which devices a round trains is drawn once from the seed (`device_plan`) and
imposed on Flower's client sampling for this process only (`fixed_sampling`):
Flower's own sampler is random and its node ids differ per run, so without
it the configurations would train different devices. Everything else (the
strategy, validation, DP, registry, ClientApp) is the production code.
Optionally one more round runs with SecAgg+ (+ DP) to measure the masked
upload; `--quick` skips it.

Each resulting global adapter is exported as a GGUF (the registry does it for
every version), fetched the way a device fetches it (sha256 checked), and
stacked on the shipped task adapter in llama.cpp (AdapterStack: task and
global adapters at scale 1, as the device runs them). Its greedy first draft
(the summarizer's `model_summaries`, what summary_eval calls "adapter") is
scored with ROUGE (rouge-score, F1, stemming) on the FIRST N SAMSum test
dialogues: a subset, not the full 819-dialogue test set. The task adapter
alone is the baseline. Differences between configurations are paired per
dialogue, with a bootstrap 95% interval.

Reports ROUGE per configuration, the federated - central gap (goal: within 1
ROUGE-L point), DP's cost (no-DP - DP ROUGE-L), upload bytes per client per
round (int8 measured by the server; fp16 and fp32 by serializing the same
update the same way; SecAgg+ measured by a client mod around the protocol),
round time p50 and ε. Saves federated.json (federated_quick.json with
--quick), a per-dialogue .jsonl and a .png in --out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from tqdm import tqdm

GOAL_GAP = 1.0  # ROUGE-L points between federated and central
GOAL_UPLOAD = 0.4e6  # bytes per client per round
SECAGG_BYTES_PER_VALUE = 8  # Flower's secaggplus_mod sends the masked vector as int64 (see server/strategy.py)
CONFIGS = ("baseline", "federated", "federated_dp", "central")
LABELS = {"baseline": "task adapter only", "federated": "federated (no DP)", "federated_dp": "federated + DP",
          "central": "central (same data)"}
TEST_DIALOGUES = 819  # SAMSum test


@dataclass(frozen=True)
class BenchOptions:
    population: int = 100
    sample: int = 4  # devices per round
    rounds: int = 3
    local_steps: int = 2
    limit: int = 80  # first N SAMSum test dialogues
    secagg_rounds: int = 1  # 0: skip the SecAgg+ measurement
    parallel: int = 2  # ClientApps training at once (one CPU each)
    threads: int = 2  # central training and llama.cpp evaluation
    learning_rate: float = 2e-3
    batch_tokens: int = 1024
    max_seq_tokens: int = 384
    max_examples: int = 64
    compression: str = "int8"
    noise_multiplier: float = 1.0
    clipping_norm: float = 1.0
    delta: float = 1e-5
    seed: int = 0
    quick: bool = False
    progress: bool = True


QUICK = dict(rounds=2, local_steps=1, limit=20, secagg_rounds=0, batch_tokens=768)


# -- which devices train when ---------------------------------------------------------------------------------------

def device_plan(population: int, sample: int, rounds: int, seed: int) -> list[list[int]]:
    """The partition ids sampled in each round: a uniform sample without replacement per round, from the seed."""
    if not 0 < sample <= population:
        raise ValueError(f"cannot sample {sample} of {population} devices")
    rng = random.Random(seed)
    return [sorted(rng.sample(range(population), sample)) for _ in range(rounds)]


class FixedSampling:
    """Within this context, Flower's client sampling (this process) returns the planned partitions' nodes.

    The simulation engine registers node i for partition i under a random
    node id; `_register_nodes` is wrapped to learn that mapping, and
    `SimpleClientManager.sample` answers the k-th sampling call with the nodes
    of `plan[k]`. Nothing else changes.
    """

    def __init__(self, plan: list[list[int]]) -> None:
        self.plan = plan
        self.partition_of: dict[int, int] = {}
        self.sampled: list[list[int]] = []
        self._lock = threading.Lock()

    def __enter__(self) -> FixedSampling:
        import flwr.server.superlink.fleet.vce.vce_api as vce_api
        from flwr.server.client_manager import SimpleClientManager

        self._vce, self._manager = vce_api, SimpleClientManager
        self._register, self._sample = vce_api._register_nodes, SimpleClientManager.sample
        fixed = self

        def register(num_nodes, state_factory):
            mapping = fixed._register(num_nodes=num_nodes, state_factory=state_factory)
            fixed.partition_of.update(mapping)
            return mapping

        def sample(manager, num_clients, min_num_clients=None, criterion=None):
            with fixed._lock:
                index = len(fixed.sampled)
                if index >= len(fixed.plan):
                    raise RuntimeError(f"sampling call {index + 1} but only {len(fixed.plan)} rounds were planned")
                wanted = fixed.plan[index]
                if num_clients != len(wanted):
                    raise RuntimeError(f"the strategy asked for {num_clients} clients, the plan has {len(wanted)}")
                fixed.sampled.append(list(wanted))
            deadline = time.monotonic() + 600
            while not set(wanted) <= set(fixed.partition_of.values()):  # nodes are still being registered
                if time.monotonic() > deadline:
                    raise RuntimeError(f"partitions {wanted} never got a node")
                time.sleep(0.1)
            node_of = {p: n for n, p in fixed.partition_of.items()}
            cids = [str(node_of[p]) for p in wanted]
            manager.wait_for(min_num_clients or 0)
            with manager._cv:
                manager._cv.wait_for(lambda: all(c in manager.clients for c in cids), timeout=600)
            return [manager.clients[c] for c in cids]

        vce_api._register_nodes = register
        SimpleClientManager.sample = sample
        return self

    def __exit__(self, *exc) -> None:
        self._vce._register_nodes = self._register
        self._manager.sample = self._sample


# -- ClientApp mods (run inside Ray's worker processes: module-level classes pickle by reference) --------------------

class DeviceWorkDir:
    """Give each virtual device a work directory of its own under `root` (as a deployment's node config does).

    Without it every run would share /tmp/tidings-fl-device-N, and local
    training resumes from a checkpoint there when it starts from the same
    adapter: round 1 of the second configuration would not train at all.
    """

    def __init__(self, root: str) -> None:
        self.root = root

    def __call__(self, msg, context, call_next):
        context.node_config["work-dir"] = f"{self.root}/device-{context.node_config['partition-id']}"
        return call_next(msg, context)


class SecAggMeter:
    """Record what each SecAgg+ stage's reply carries (ConfigRecord payload bytes) to a JSON-lines file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self, msg, context, call_next):
        from flwr.common.secure_aggregation.secaggplus_constants import (
            RECORD_KEY_CONFIGS,
            Key,
        )

        if RECORD_KEY_CONFIGS not in msg.content.config_records:
            return call_next(msg, context)
        stage = str(msg.content.config_records[RECORD_KEY_CONFIGS].get(Key.STAGE, "?"))  # the mod pops it
        reply = call_next(msg, context)
        if not reply.has_error() and RECORD_KEY_CONFIGS in reply.content.config_records:
            configs = reply.content.config_records[RECORD_KEY_CONFIGS]
            masked = configs.get(Key.MASKED_PARAMETERS, [])
            line = {"partition": int(context.node_config["partition-id"]), "stage": stage,
                    "bytes": _payload_bytes(configs), "masked_vector_bytes": sum(len(b) for b in masked)}
            with open(self.path, "a") as f:
                f.write(json.dumps(line) + "\n")
        return reply


def _payload_bytes(configs) -> int:
    total = 0
    for value in configs.values():
        for item in value if isinstance(value, list) else [value]:
            total += len(item) if isinstance(item, (bytes, str)) else 8
    return total


def bench_client_app(work_root: Path, meter: Path | None = None):
    from flwr.clientapp import ClientApp
    from tidings.federated.client_app import client_fn, privacy_mod

    mods = [DeviceWorkDir(str(work_root))] + ([SecAggMeter(str(meter))] if meter else []) + [privacy_mod]
    return ClientApp(client_fn=client_fn, mods=mods)


# -- the three trainings --------------------------------------------------------------------------------------------

def settings_for(options: BenchOptions, state_dir: Path, *, dp: bool, secagg: bool, rounds: int):
    from tidings.server.settings import FederationSettings

    return FederationSettings(
        state_dir=str(state_dir), rounds=rounds, clients_per_round=options.sample, min_available=options.population,
        population=options.population, local_steps=options.local_steps, learning_rate=options.learning_rate,
        batch_tokens=options.batch_tokens, max_seq_tokens=options.max_seq_tokens, max_examples=options.max_examples,
        threads=1, secagg=secagg, dp=dp, dp_min_clients=1, noise_multiplier=options.noise_multiplier,
        clipping_norm=options.clipping_norm, delta=options.delta, compression=options.compression, seed=options.seed,
        # What training makes of the rounds, published or not, with DP applied whatever the cohort size.
        gate=False)


@contextlib.contextmanager
def _quiet_workers():
    """No per-step tqdm bars from the Ray workers (they inherit the environment at ray.init)."""
    old = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = old


def run_federated(name: str, options: BenchOptions, plan: list[list[int]], work: Path, *, dp: bool,
                  secagg: bool = False) -> dict:
    """One configuration on the simulation engine; returns its round records and where its adapter is."""
    from tidings.federated.simulation import simulate
    from tidings.server.registry import AdapterRegistry

    state = work / name / "state"
    shutil.rmtree(work / name, ignore_errors=True)
    meter = work / name / "secagg.jsonl" if secagg else None
    settings = settings_for(options, state, dp=dp, secagg=secagg, rounds=len(plan))
    bar = tqdm(total=len(plan), desc=f"{name}: rounds", unit="round", disable=not options.progress)

    def on_round(record) -> None:
        bar.update(1)
        bar.set_postfix(clients=record.clients, loss=f"{record.train_loss or float('nan'):.3f}")

    started = time.perf_counter()
    with FixedSampling(plan) as fixed, _quiet_workers():
        records = simulate(settings, options.population, parallel=options.parallel,
                           client_app=bench_client_app(work / name / "devices", meter), on_round=on_round)
    bar.close()
    wall = time.perf_counter() - started
    if len(records) != len(plan):
        raise RuntimeError(f"{name}: {len(records)} of {len(plan)} rounds completed")
    registry = AdapterRegistry(state)
    newest = registry.newest()
    result = {
        "registry": str(state), "adapter_version": newest.version,
        "sampled_devices": fixed.sampled, "wall_seconds": round(wall, 1),
        "rounds": [asdict(r) for r in records],
        "round_seconds": [r.seconds for r in records],
        "round_seconds_p50": statistics.median(r.seconds for r in records),
        "clients_per_round": [r.clients for r in records],
        "failures": sum(r.failures for r in records), "rejected": sum(r.rejected for r in records),
        "train_loss": [r.train_loss for r in records],
        "upload_bytes_per_client_per_round": int(statistics.mean(r.upload_bytes_per_client for r in records)),
        "epsilon": records[-1].epsilon, "delta": settings.delta,
        "noise_std_on_mean": (settings.noise_multiplier * settings.clipping_norm / options.sample) if dp else 0.0,
        "global_update_norms": global_update_norms(registry),
    }
    if meter is not None:
        result["secagg_measured"] = _secagg_summary(meter, len(plan))
    return result


def global_update_norms(registry) -> list[float]:
    """L2 norm of each published version minus the one before: how far each round moved the global adapter."""
    from tidings.federated.adapter import update_norm

    versions = [registry.arrays(v.version) for v in registry.versions()]
    names = sorted(versions[0])
    return [round(update_norm([new[n] for n in names], [old[n] for n in names]), 4)
            for old, new in zip(versions, versions[1:])]


def _secagg_summary(meter: Path, rounds: int) -> dict:
    lines = [json.loads(line) for line in meter.read_text().splitlines()] if meter.is_file() else []
    collects = [line for line in lines if line["stage"] == "collect_masked_vectors"]
    client_rounds = max(len(collects), 1)
    by_stage: dict[str, float] = {}
    for line in lines:
        by_stage[line["stage"]] = by_stage.get(line["stage"], 0) + line["bytes"] / client_rounds
    return {"masked_vector_bytes_per_client_per_round": int(statistics.mean(c["masked_vector_bytes"] for c in collects))
            if collects else None,
            "all_stages_bytes_per_client_per_round": int(sum(by_stage.values())),
            "bytes_per_client_per_round_by_stage": {k: int(v) for k, v in by_stage.items()},
            "client_rounds": len(collects), "rounds": rounds}


def central_examples(plan: list[list[int]], population: int, max_examples: int, seed: int) -> tuple[list, list[int]]:
    """The union of the planned devices' data (each capped as on the device), shuffled."""
    from tidings.federated.partitions import device_examples

    devices = sorted({p for sample in plan for p in sample})
    pooled = [e for p in devices for e in device_examples(p, population, seed=0)[:max_examples]]
    random.Random(seed).shuffle(pooled)
    return pooled, devices


def run_central(options: BenchOptions, plan: list[list[int]], work: Path, start_registry: Path,
                clients_per_round: list[int]) -> dict:
    """The same devices' data in one place, trained as FedAvg's large-batch equivalent, with the devices' code.

    A FedAvg round averages the local steps of its devices: it moves the
    adapter about as far as local-steps optimizer steps over all those
    devices' batches together. So central training takes rounds x local steps
    steps, each over devices-per-round times the device batch: the same
    examples and tokens as the federated run, the same number of sequential
    updates. (Taking devices x rounds x local steps small steps instead trains
    several times further than the federation does, and mixes "trained more"
    into "trained federated".) A round in which no device finished adds no steps.
    """
    from tidings.federated.adapter import AdapterSpec
    from tidings.federated.task import (
        LocalTraining,
        embedded_model,
        layout_for,
        train_local,
    )
    from tidings.server.registry import AdapterRegistry

    spec = AdapterSpec()
    model = embedded_model()
    layout = layout_for(model, spec)
    start = AdapterRegistry(start_registry).arrays(0)  # the federated runs' version 0
    examples, devices = central_examples(plan, options.population, options.max_examples, options.seed)
    rounds = sum(1 for clients in clients_per_round if clients)
    steps = rounds * options.local_steps
    batch_tokens = options.batch_tokens * options.sample
    training = LocalTraining(steps=steps, learning_rate=options.learning_rate, batch_tokens=batch_tokens,
                             max_seq_tokens=options.max_seq_tokens, max_examples=len(examples), seed=1,
                             threads=options.threads)
    shutil.rmtree(work / "central", ignore_errors=True)
    result = train_local(model, spec, start, examples, training, work / "central" / "train")
    if result.arrays is None:
        raise RuntimeError("central training stopped early")
    registry = AdapterRegistry(work / "central" / "state", base_sha256=model.spec.sha256)
    registry.publish(result.arrays, spec, layout.fingerprint, round=0,
                     metrics={"steps": result.steps, "train_loss": result.loss}, privacy_history=[],
                     epsilon=-1.0, delta=options.delta)
    return {"registry": str(registry.root), "devices": devices, "examples": len(examples),
            "examples_used": result.num_examples, "steps": result.steps, "batch_tokens": batch_tokens,
            "train_loss": result.loss,
            "seconds": round(result.seconds, 1), "threads": options.threads}


def upload_sizes(registry: Path, measured: int, kind: str) -> dict:
    """Bytes one client uploads per round for each encoding: the run's update serialized as the ClientApp does.

    The server measures the run's own encoding (`kind`: the sum of the
    serialized tensors it receives); the sizes depend only on the shapes, so
    encoding the same update otherwise and serializing it the same way gives
    the other encodings' exact sizes (and cross-checks the measured one).
    """
    from flwr.common import ndarrays_to_parameters
    from tidings.federated import compression
    from tidings.server.registry import AdapterRegistry

    from tidings.federated.adapter import AdapterSpec
    from tidings.federated.task import embedded_model, layout_for

    reg = AdapterRegistry(registry)
    old, new = reg.arrays(0), reg.arrays(reg.newest().version)
    names = layout_for(embedded_model(), AdapterSpec()).names  # what travels (a frozen A does not)
    base, values = [old[n] for n in names], [new[n] for n in names]
    sizes = {"values": sum(v.size for v in values)}
    for encoding in ("int8", "fp16", "none"):
        encoded = compression.encode(values, base, encoding)
        size = sum(len(t) for t in ndarrays_to_parameters(encoded.arrays).tensors)
        name = "fp32" if encoding == "none" else encoding
        sizes[name] = {"bytes": size, "source": f"the run's update encoded {name} and serialized as the client does"}
        if encoding == kind:
            sizes[name] = {"bytes": measured, "source": "measured by the server during the run",
                           "serialized_here": size}
    return sizes


# -- quality through llama.cpp ----------------------------------------------------------------------------------------

def evaluate(registries: dict[str, str | None], limit: int, threads: int, work: Path,
             progress: bool = True) -> tuple[dict, list[dict]]:
    """ROUGE of each configuration's adapter stacked on the task adapter; None = the task adapter alone."""
    from rouge_score import rouge_scorer
    from tidings.bench.summary_eval import score
    from tidings.device.config import Config, EngineConfig, SummarizerConfig
    from tidings.device.llm.engine import Engine
    from tidings.device.summary.grounding import check_grounding
    from tidings.device.summary.summarizer import Summarizer
    from tidings.federated.device_sync import AdapterStack, fetch_newest, pin_operator_key
    from tidings.federated.task import TASK_ADAPTER
    from tidings.server.registry import AdapterRegistry
    from tidings.models.registry import DEFAULT_MODEL, resolve_adapter, resolve_model
    from tidings.models.training.data import DATA_DIR, load_samsum

    names = list(registries)
    model = resolve_model(DEFAULT_MODEL, Config().model.cache_dir)
    task = resolve_adapter(TASK_ADAPTER, model)
    dialogues = load_samsum(DATA_DIR / "samsum_test.json")[:limit]
    rows = [{"id": d.id, "reference": d.summary} for d in dialogues]
    seconds: dict[str, list[float]] = {n: [] for n in names}
    bar = tqdm(total=len(names) * len(dialogues), desc="SAMSum test", unit="summary", disable=not progress)
    for name in names:
        # A fresh engine per configuration, set up as a device does: task adapter, then the fetched global one.
        with Engine(model, EngineConfig(n_ctx=2048, n_threads=threads)) as engine:
            summarizer = Summarizer(SummarizerConfig(), engine)
            stack = AdapterStack(engine)  # task and global at scale 1.0, the device's defaults
            stack.set_task(task)
            if registries[name] is not None:
                device = work / "device" / name
                shutil.rmtree(device, ignore_errors=True)  # a new device each run: a rerun's registries have new keys
                pin_operator_key(device, AdapterRegistry(Path(registries[name])).public_key_pem)  # enrolment
                stack.set_global(fetch_newest(Path(registries[name]), device, base_sha256=model.spec.sha256))
            bar.set_postfix(config=name)
            for dialogue, row in zip(dialogues, rows):
                started = time.perf_counter()
                text = " ".join(summarizer.model_summaries(list(dialogue.messages), temperature=0.0)[0].split())
                seconds[name].append(time.perf_counter() - started)
                row[name] = text
                row[f"{name}_grounded"] = check_grounding(text, list(dialogue.messages)).ok
                bar.update(1)
    bar.close()
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for row in rows:
        for name in names:
            row[f"{name}_rougeL"] = 100 * scorer.score(row["reference"], row[name])["rougeL"].fmeasure
    results = {n: score(scorer, rows, n) | {"seconds_p50": statistics.median(seconds[n])} for n in names}
    return results, rows


def paired(rows: list[dict], a: str, b: str, resamples: int = 2000, seed: int = 0) -> dict:
    """Mean per-dialogue ROUGE-L difference a - b with a bootstrap 95% interval."""
    diffs = np.array([r[f"{a}_rougeL"] - r[f"{b}_rougeL"] for r in rows])
    rng = np.random.default_rng(seed)
    means = rng.choice(diffs, size=(resamples, len(diffs)), replace=True).mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"rougeL": float(diffs.mean()), "ci95": [float(low), float(high)],
            "dialogues_changed": int(np.count_nonzero(diffs))}


# -- the whole benchmark ----------------------------------------------------------------------------------------------

def run_bench(options: BenchOptions, work: Path) -> tuple[dict, list[dict]]:
    timings: dict[str, float] = {}
    plan = device_plan(options.population, options.sample, options.rounds, options.seed)

    def phase(name: str, fn, *args, **kwargs):
        started = time.perf_counter()
        value = fn(*args, **kwargs)
        timings[name] = round(time.perf_counter() - started, 1)
        return value

    federated = phase("federated", run_federated, "federated", options, plan, work, dp=False)
    federated_dp = phase("federated_dp", run_federated, "federated_dp", options, plan, work, dp=True)
    for name, run in (("federated", federated), ("federated_dp", federated_dp)):
        if run["sampled_devices"] != plan:
            raise RuntimeError(f"{name} trained {run['sampled_devices']}, not the plan {plan}")
    secagg = None
    if options.secagg_rounds and options.sample >= 3:
        secagg = phase("secagg", run_federated, "secagg", options, plan[: options.secagg_rounds], work, dp=True,
                       secagg=True)
    central = phase("central", run_central, options, plan, work, Path(federated["registry"]),
                    federated["clients_per_round"])
    registries = {"baseline": None, "federated": federated["registry"], "federated_dp": federated_dp["registry"],
                  "central": central["registry"]}
    results, rows = phase("evaluation", evaluate, registries, options.limit, options.threads, work,
                          progress=options.progress)
    report = build_report(options, plan, federated, federated_dp, secagg, central, results, rows, timings)
    return report, rows


def build_report(options: BenchOptions, plan, federated: dict, federated_dp: dict, secagg: dict | None,
                 central: dict, results: dict, rows: list[dict], timings: dict) -> dict:
    from tidings.federated.adapter import AdapterSpec

    measured = federated["upload_bytes_per_client_per_round"]
    upload = upload_sizes(Path(federated["registry"]), measured, options.compression)
    if secagg is not None:
        meter = secagg["secagg_measured"]
        upload["secagg_plus"] = {
            "bytes": meter["masked_vector_bytes_per_client_per_round"],
            "all_stages_bytes": meter["all_stages_bytes_per_client_per_round"],
            "source": f"measured in {meter['client_rounds']} client-round(s) with SecAgg+ (+ DP): the masked "
                      f"vector's payload (keys and shares of the other stages in all_stages_bytes); Flower's "
                      f"message framing not counted",
            "round_seconds_p50": secagg["round_seconds_p50"]}
    else:
        why = ("--secagg-rounds 0" if not options.secagg_rounds else
               f"SecAgg+ needs at least 3 clients per round, the sample is {options.sample}")
        upload["secagg_plus"] = {
            "bytes": SECAGG_BYTES_PER_VALUE * upload["values"], "all_stages_bytes": None,
            "source": f"not run here ({why}); computed: SecAgg+ quantizes every one of the {upload['values']:,} "
                      f"values that travel into the protocol's modular field and masks it, and Flower's "
                      f"secaggplus_mod sends it as int64 (8 B/value), so int8/fp16 compression cannot apply"}
    from tidings.server.settings import FederationSettings

    # What the shipped defaults do with this many devices per round: DP only from dp_min_clients on.
    defaults = FederationSettings(clients_per_round=options.sample)
    default_config = "federated_dp" if defaults.dp_applied else "federated"
    default_cost = paired(rows, "baseline", default_config)
    gap = paired(rows, "federated", "central")
    dp_cost = paired(rows, "federated", "federated_dp")
    fed_gain = paired(rows, "federated", "baseline")
    central_gain = paired(rows, "central", "baseline")
    spec = AdapterSpec()
    report = {
        "benchmark": "federated",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": options.quick,
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "setup": {
            "population": options.population, "sample_per_round": options.sample, "rounds": options.rounds,
            "local_steps": options.local_steps, "learning_rate": options.learning_rate,
            "batch_tokens": options.batch_tokens, "max_seq_tokens": options.max_seq_tokens,
            "max_examples_per_device": options.max_examples, "compression": options.compression,
            "parallel_clients": options.parallel, "threads_per_client": 1, "central_threads": options.threads,
            "seed": options.seed, "sampled_devices": plan,
            "partitions": "non-IID: Dirichlet(0.5) corpus mix of SAMSum validation + DialogSum dev per device, "
                          "3 wearer styles (federated/partitions.py)",
            "adapter": {"rank": spec.rank, "alpha": spec.alpha, "modules": list(spec.target_modules),
                        "frozen_a": spec.frozen_a, "values": upload["values"]},
            "dp": {"noise_multiplier": options.noise_multiplier, "clipping_norm": options.clipping_norm,
                   "delta": options.delta, "sampling_rate": options.sample / options.population},
            "central": {"steps": central["steps"], "devices": len(central["devices"]),
                        "examples": central["examples"], "examples_used": central["examples_used"],
                        "batch_tokens": central["batch_tokens"],
                        "matches": "FedAvg's large-batch equivalent: rounds with a finished device x local steps, "
                                   "each step over devices-per-round x the device batch"},
        },
        "evaluation": {
            "dataset": "SAMSum test", "dialogues": len(rows), "of": TEST_DIALOGUES,
            "subset": f"the first {len(rows)} of {TEST_DIALOGUES} SAMSum test dialogues: a subset, not the full "
                      f"test set",
            "decoding": "greedy first draft (Summarizer.model_summaries, temperature 0) through llama.cpp with the "
                        "task adapter and the configuration's global adapter stacked at scale 1 (AdapterStack)",
            "rouge": "rouge-score 0.1.2, F1, use_stemmer=True, x100",
            "differences": "paired per dialogue, mean with a bootstrap 95% interval (2000 resamples)",
        },
        "results": results,
        "comparisons": {"federated_minus_central": gap, "dp_cost": dp_cost,
                        "federated_minus_baseline": fed_gain, "central_minus_baseline": central_gain},
        "federation": {"federated": _strip(federated), "federated_dp": _strip(federated_dp),
                       "secagg": _strip(secagg) if secagg else None, "central": _strip(central)},
        "upload_bytes_per_client_per_round": upload,
        "round_seconds_p50": {"federated": federated["round_seconds_p50"],
                              "federated_dp": federated_dp["round_seconds_p50"],
                              "secagg": secagg["round_seconds_p50"] if secagg else None},
        "epsilon": {"value": federated_dp["epsilon"], "delta": options.delta, "rounds": options.rounds,
                    "noise_multiplier": options.noise_multiplier,
                    "sampling_rate": options.sample / options.population,
                    "noise_std_on_mean": federated_dp["noise_std_on_mean"],
                    "noise_norm_on_mean": federated_dp["noise_std_on_mean"] * float(np.sqrt(upload["values"])),
                    "clipping_norm": options.clipping_norm,
                    "accountant": "server/privacy.py (dp-accounting RDP, Poisson-sampled Gaussian)"},
        "default_configuration": {
            "configuration": default_config, "clients_per_round": options.sample,
            "dp_min_clients": defaults.dp_min_clients,
            "why": (f"central DP is applied from {defaults.dp_min_clients} devices per round (bench/dp_utility.py); "
                    f"with {options.sample} it is not, and ε is infinite")
            if not defaults.dp_applied else "central DP applies at this cohort size"},
        "goals": {
            "default_within_1_rougeL_of_task_adapter": {
                "value": default_cost["rougeL"], "goal": "task adapter alone - default configuration <= 1 ROUGE-L",
                "met": default_cost["rougeL"] <= 1.0},
            "rougeL_gap": {"value": gap["rougeL"], "goal": f"|federated - central| <= {GOAL_GAP} ROUGE-L",
                           "met": abs(gap["rougeL"]) <= GOAL_GAP},
            "upload": {"value": measured, "encoding": options.compression, "goal": f"<= {GOAL_UPLOAD:.0f} B per client "
                       f"per round", "met": measured <= GOAL_UPLOAD},
            "upload_secagg_plus": {"value": upload["secagg_plus"]["bytes"], "goal": f"<= {GOAL_UPLOAD:.0f} B",
                                   "met": upload["secagg_plus"]["bytes"] <= GOAL_UPLOAD},
        },
        "timings_seconds": timings,
    }
    return report


def _strip(run: dict) -> dict:
    return {k: v for k, v in run.items() if k not in ("registry",)}


# -- output -----------------------------------------------------------------------------------------------------------

def _mb(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 1e6:.3f} MB"


def render(report: dict) -> str:
    res, ev = report["results"], report["evaluation"]
    fed = report["federation"]
    up = report["upload_bytes_per_client_per_round"]
    eps = report["epsilon"]
    lines = [f"ROUGE on {ev['subset']}; {ev['decoding']}.",
             f"{report['setup']['population']} virtual devices, {report['setup']['sample_per_round']} per round, "
             f"{report['setup']['rounds']} rounds x {report['setup']['local_steps']} local steps; central: "
             f"{report['setup']['central']['steps']} steps of {report['setup']['central']['batch_tokens']} tokens on "
             f"the union of the {report['setup']['central']['devices']} sampled devices' data.",
             "",
             f"{'configuration':<22} {'R-1':>6} {'R-2':>6} {'R-L':>6} {'grounded':>9} {'words':>6} "
             f"{'upload/client/round':>20} {'round p50':>10} {'ε':>8}"]
    extra = {"federated": (_mb(fed["federated"]["upload_bytes_per_client_per_round"]),
                           f"{fed['federated']['round_seconds_p50']:.1f} s", "none"),
             "federated_dp": (_mb(fed["federated_dp"]["upload_bytes_per_client_per_round"]),
                              f"{fed['federated_dp']['round_seconds_p50']:.1f} s", f"{eps['value']:.2f}")}
    for name in CONFIGS:
        r = res[name]
        upload, p50, epsilon = extra.get(name, ("-", "-", "-"))
        lines.append(f"{LABELS[name]:<22} {r['rouge1']:6.1f} {r['rouge2']:6.1f} {r['rougeL']:6.1f} "
                     f"{r['grounded_share']:9.1%} {r['mean_words']:6.1f} {upload:>20} {p50:>10} {epsilon:>8}")
    c = report["comparisons"]

    def diff(key: str) -> str:
        d = c[key]
        return f"{d['rougeL']:+.2f} ROUGE-L (95% CI {d['ci95'][0]:+.2f} .. {d['ci95'][1]:+.2f})"

    secagg = up["secagg_plus"]
    lines += ["",
              f"federated - central:   {diff('federated_minus_central')}",
              f"DP cost (no DP - DP):  {diff('dp_cost')}  at ε = {eps['value']:.2f}, δ = {eps['delta']:g} "
              f"(z = {eps['noise_multiplier']}, q = {eps['sampling_rate']:.3f}, {eps['rounds']} rounds; noise std "
              f"{eps['noise_std_on_mean']:.3g} per value, norm {eps['noise_norm_on_mean']:.3g} on the mean, vs "
              f"updates clipped to norm {eps['clipping_norm']:g})",
              f"federated - baseline:  {diff('federated_minus_baseline')}",
              f"the shipped defaults at {report['default_configuration']['clients_per_round']} devices per round "
              f"run '{LABELS[report['default_configuration']['configuration']]}': "
              f"{report['default_configuration']['why']}",
              f"central - baseline:    {diff('central_minus_baseline')}",
              "",
              "upload per client per round: " + ", ".join(
                  f"{kind} {up[kind]['bytes']:,} B{' (measured)' if 'serialized_here' in up[kind] else ''}"
                  for kind in ("int8", "fp16", "fp32"))
              + f", SecAgg+ {secagg['bytes']:,} B "
                f"({'measured' if secagg.get('all_stages_bytes') is not None else 'not run here'})",
              ]
    lines += [f"round seconds: federated {fed['federated']['round_seconds']}, federated + DP "
              f"{fed['federated_dp']['round_seconds']} (round 1 includes each simulation worker loading the model)",
              f"global adapter moved per round (L2 norm): federated {fed['federated']['global_update_norms']}, "
              f"federated + DP {fed['federated_dp']['global_update_norms']}"]
    if secagg.get("round_seconds_p50") is not None:
        lines.append(f"SecAgg+ round p50 {secagg['round_seconds_p50']:.1f} s; all four stages upload "
                     f"{secagg['all_stages_bytes']:,} B per client per round")
    lines.append("")
    for key, goal in report["goals"].items():
        value = f"{goal['value']:,} B" if key.startswith("upload") else f"{goal['value']:+.2f}"
        lines.append(f"goal {key}: {goal['goal']}: {value} -> {'met' if goal['met'] else 'NOT met'}")
    lines.append(f"(ε is reported, no goal set; {ev['dialogues']} test dialogues is a subset: small differences are "
                 f"within noise, see the intervals)")
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = report["results"]
    values = [res[n]["rougeL"] for n in CONFIGS]
    colors = ["#bbbbbb", "#2b7bba", "#ff7f0e", "#2ca02c"]
    fig, ax = plt.subplots(figsize=(9, 4.8))
    bars = ax.bar([LABELS[n] for n in CONFIGS], values, color=colors)
    ax.bar_label(bars, fmt="%.1f", padding=3)
    central = res["central"]["rougeL"]
    ax.axhspan(central - GOAL_GAP, central + GOAL_GAP, color="#2ca02c", alpha=0.15,
               label=f"goal: federated within ±{GOAL_GAP:g} of central")
    up = report["upload_bytes_per_client_per_round"]
    fed = report["federation"]
    eps = report["epsilon"]
    kind = report["setup"]["compression"].replace("none", "fp32")
    ax.annotate(f"{kind} upload {up[kind]['bytes'] / 1e6:.3f} MB\n"
                f"round p50 {fed['federated']['round_seconds_p50']:.0f} s",
                (1, values[1]), xytext=(0, 18), textcoords="offset points", ha="center", fontsize=8)
    cost = report["comparisons"]["dp_cost"]["rougeL"]
    ax.annotate(f"ε = {eps['value']:.2f} at δ = {eps['delta']:g}\nDP cost {cost:.1f} R-L",
                (2, values[2]), xytext=(0, 18), textcoords="offset points", ha="center", fontsize=8)
    ax.set_ylim(0, max(values + [central + GOAL_GAP]) * 1.3 + 1)
    ax.set_ylabel("ROUGE-L F1 (x100)")
    ev = report["evaluation"]
    setup = report["setup"]
    ax.set_title(f"Federated vs central, first {ev['dialogues']} of {ev['of']} SAMSum test dialogues (subset)\n"
                 f"{setup['population']} devices, {setup['sample_per_round']}/round, {setup['rounds']} rounds, "
                 f"{setup['local_steps']} local steps; upload fp16 {up['fp16']['bytes'] / 1e6:.3f} MB, "
                 f"SecAgg+ {up['secagg_plus']['bytes'] / 1e6:.3f} MB (goal ≤ 0.4 MB)", fontsize=9)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def save(report: dict, rows: list[dict], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    stem = out / ("federated_quick" if report["quick"] else "federated")
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2))
    with stem.with_suffix(".jsonl").open("w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    plot(report, stem.with_suffix(".png"))
    return stem


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = BenchOptions()
    parser.add_argument("--quick", action="store_true",
                        help=f"smaller run (~4 min): {', '.join(f'{k}={v}' for k, v in QUICK.items())}")
    parser.add_argument("--population", type=int, help=f"virtual devices (default {defaults.population})")
    parser.add_argument("--sample", type=int, help=f"devices per round (default {defaults.sample})")
    parser.add_argument("--rounds", type=int, help=f"default {defaults.rounds}")
    parser.add_argument("--local-steps", type=int, help=f"optimizer steps per device per round "
                        f"(default {defaults.local_steps})")
    parser.add_argument("--limit", type=int, help=f"first N SAMSum test dialogues (default {defaults.limit})")
    parser.add_argument("--secagg-rounds", type=int, help=f"rounds with SecAgg+ to measure its upload "
                        f"(default {defaults.secagg_rounds}, 0 skips)")
    parser.add_argument("--parallel", type=int, help=f"ClientApps training at once (default {defaults.parallel})")
    parser.add_argument("--threads", type=int, help=f"threads for central training and llama.cpp "
                        f"(default {defaults.threads})")
    parser.add_argument("--batch-tokens", type=int, help=f"padded tokens per step (default {defaults.batch_tokens})")
    parser.add_argument("--max-seq-tokens", type=int, help=f"default {defaults.max_seq_tokens}")
    parser.add_argument("--max-examples", type=int, help=f"per device (default {defaults.max_examples})")
    parser.add_argument("--noise-multiplier", type=float, help=f"DP z (default {defaults.noise_multiplier})")
    parser.add_argument("--clipping-norm", type=float, help=f"DP C (default {defaults.clipping_norm})")
    parser.add_argument("--compression", choices=("none", "fp16", "int8"), help=f"default {defaults.compression}")
    parser.add_argument("--seed", type=int, help=f"which devices are sampled (default {defaults.seed})")
    parser.add_argument("--work-dir", type=Path, help="keep registries and device checkpoints here (default: a "
                        "temporary directory, removed at the end)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="directory for JSON, JSONL and PNG")
    args = parser.parse_args(argv)

    options = replace(defaults, **(QUICK if args.quick else {}), quick=args.quick, progress=not args.no_progress)
    for field in ("population", "sample", "rounds", "local_steps", "limit", "secagg_rounds", "parallel", "threads",
                  "batch_tokens", "max_seq_tokens", "max_examples", "noise_multiplier", "clipping_norm",
                  "compression", "seed"):
        value = getattr(args, field)
        if value is not None:
            options = replace(options, **{field: value})
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="tidings-fedbench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        report, rows = run_bench(options, work.resolve())
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    stem = save(report, rows, args.out)
    print()
    print(render(report))
    print(f"saved {stem}.json, .jsonl and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
