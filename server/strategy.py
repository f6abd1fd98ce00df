"""The server's aggregation: validated, weighted FedAvg, central DP noise, and a record of every round.

Strategies nest (legacy Flower API, because SecAgg+ only exists there):

    RoundRecorder                          quality gate, versions + round log, round offset, ε
      Validating                           decompress, reject malformed updates (validation.py)
        FailureTolerantClientSideDP        clipping norm to clients; Gaussian noise on the mean
          FedAvg                           weighted by num_examples (uniform under DP)

Flower's own `DifferentialPrivacyClientSideFixedClipping` returns no
aggregate at all when any client failed; a device dropping out is normal
here, so the subclass aggregates the m updates that arrived and calibrates
the noise to them (std z*C/m on their mean: the same z per round).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from flwr.common import Parameters, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.strategy import DifferentialPrivacyClientSideFixedClipping, FedAvg, Strategy
from flwr.supercore.differential_privacy import add_gaussian_noise_to_params, compute_stdv

from tidings.federated.adapter import AdapterLayout, AdapterSpec, export_gguf
from tidings.server.privacy import epsilon
from tidings.server.quality_gate import QualityGate
from tidings.server.registry import AdapterRegistry, Version
from tidings.server.settings import FederationSettings
from tidings.server.validation import Rejection, check_update, decoded_update

log = logging.getLogger("tidings")


class FailureTolerantClientSideDP(DifferentialPrivacyClientSideFixedClipping):
    def aggregate_fit(self, server_round, results, failures):
        if not results:
            return None, {}
        aggregated, metrics = self.strategy.aggregate_fit(server_round, results, failures)
        if aggregated is None:
            return None, metrics
        std = compute_stdv(self.noise_multiplier, self.clipping_norm, len(results))
        log.info("central DP: Gaussian noise std %.4g on the mean of %d clipped updates", std, len(results))
        return add_gaussian_noise_to_params(aggregated, self.noise_multiplier, self.clipping_norm,
                                            len(results)), {**metrics, "noise_std": std}


class _Delegating(Strategy):
    def __init__(self, inner: Strategy) -> None:
        self.inner = inner

    def initialize_parameters(self, client_manager):
        return self.inner.initialize_parameters(client_manager)

    def configure_fit(self, server_round, parameters, client_manager):
        return self.inner.configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(self, server_round, results, failures):
        return self.inner.aggregate_fit(server_round, results, failures)

    def configure_evaluate(self, server_round, parameters, client_manager):
        return self.inner.configure_evaluate(server_round, parameters, client_manager)

    def aggregate_evaluate(self, server_round, results, failures):
        return self.inner.aggregate_evaluate(server_round, results, failures)

    def evaluate(self, server_round, parameters):
        return self.inner.evaluate(server_round, parameters)


class Validating(_Delegating):
    """Decompress every update and drop the malformed ones (see validation.py for what runs where)."""

    def __init__(self, inner: Strategy, layout: AdapterLayout, norm_bound: float) -> None:
        super().__init__(inner)
        self.layout = layout
        self.norm_bound = norm_bound
        self.global_values: list[np.ndarray] = []
        self.rejections: list[Rejection] = []
        self.upload_bytes: list[int] = []

    def configure_fit(self, server_round, parameters, client_manager):
        self.global_values = parameters_to_ndarrays(parameters)
        return self.inner.configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(self, server_round, results, failures):
        self.rejections, self.upload_bytes, accepted = [], [], []
        for proxy, fit_res in results:
            self.upload_bytes.append(sum(len(t) for t in fit_res.parameters.tensors))
            try:
                values = decoded_update(fit_res, self.global_values)
                reason = check_update(values, self.global_values, self.layout,
                                      fit_res.metrics.get("layout"), self.norm_bound)
            except (ValueError, TypeError) as exc:
                values, reason = None, f"undecodable update: {exc}"
            if reason:
                self.rejections.append(Rejection(str(proxy.cid), reason))
                log.warning("round %d: rejected the update of node %s: %s", server_round, proxy.cid, reason)
                continue
            fit_res.parameters = ndarrays_to_parameters(values)
            accepted.append((proxy, fit_res))
        return self.inner.aggregate_fit(server_round, accepted, failures)


@dataclass(frozen=True)
class RoundRecord:
    round: int
    clients: int
    failures: int
    rejected: int
    rejections: list
    upload_bytes_per_client: int
    train_loss: float | None
    metrics: dict
    epsilon: float
    delta: float
    adapter_version: int  # the version devices run after this round
    published: bool
    seconds: float
    candidate_version: int | None = None  # the version this round wrote, published or rejected
    gate: dict | None = None  # the quality gate's verdict, when it ran


class RoundRecorder(_Delegating):
    """Global round numbering, per-round training instructions, a version and a record after every round."""

    def __init__(self, inner: Strategy, validating: Validating, registry: AdapterRegistry, start: Version,
                 progress: Version, settings: FederationSettings, spec: AdapterSpec,
                 on_round: Callable[[RoundRecord], None], gate: QualityGate | None) -> None:
        super().__init__(inner)
        self.validating = validating
        self.registry = registry
        self.good = start  # the newest published version: what devices run, what a round starts from
        self.progress = progress  # the newest version written, rejected or not: round count, privacy spent
        self.gate = gate
        self.settings = settings
        self.spec = spec
        self.on_round = on_round
        self.started = time.perf_counter()
        self.available = 0

    def configure_fit(self, server_round, parameters, client_manager):
        self.started = time.perf_counter()
        self.available = client_manager.num_available()
        s = self.settings
        instructions = {"global-round": self.progress.round + 1, "rank": s.rank, "alpha": s.alpha, "modules": s.modules,
                        "frozen-a": s.frozen_a,
                        "layout": self.validating.layout.fingerprint, "local-steps": s.local_steps,
                        "learning-rate": s.learning_rate, "batch-tokens": s.batch_tokens,
                        "max-seq-tokens": s.max_seq_tokens, "max-examples": s.max_examples, "threads": s.threads,
                        "compression": "none" if s.secagg else s.compression}
        sampled = self.inner.configure_fit(server_round, parameters, client_manager)
        for _, fit_ins in sampled:
            fit_ins.config.update(instructions)
        return sampled

    def aggregate_fit(self, server_round, results, failures):
        aggregated, metrics = self.inner.aggregate_fit(server_round, results, failures)
        s = self.settings
        accepted = len(results) - len(self.validating.rejections)
        history = list(self.progress.privacy_history)
        if s.dp_applied and aggregated is not None:
            population = s.population or self.available
            history.append([s.noise_multiplier, min(1.0, s.clients_per_round / max(population, 1))])
        spent = epsilon(history, s.delta) if s.dp_applied else float("inf")
        losses = [r.metrics["train_loss"] for _, r in results if "train_loss" in r.metrics]
        round_metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        if losses:
            round_metrics["train_loss"] = float(np.mean(losses))
        number = self.progress.round + 1
        verdict = candidate = None
        if aggregated is not None:
            arrays = self.validating.layout.from_list(parameters_to_ndarrays(aggregated))
            if self.gate is not None:
                with tempfile.TemporaryDirectory(prefix="tidings-candidate-") as tmp:
                    verdict = self.gate.check(export_gguf(arrays, self.spec, Path(tmp) / "candidate.gguf"),
                                              self.good)
            candidate = self.registry.publish(
                arrays, self.spec, self.validating.layout.fingerprint, round=number, metrics=round_metrics,
                privacy_history=history, epsilon=spent if s.dp_applied else -1.0, delta=s.delta,
                rejected=verdict is not None and not verdict.passed, gate=verdict.to_json() if verdict else None)
            self.progress = candidate
            if not candidate.rejected:
                self.good = candidate
        published = candidate is not None and not candidate.rejected
        masked = s.secagg  # under SecAgg+ each client uploads its masked vector: int64 per value
        upload = self.validating.layout.size * 8 if masked else (
            int(np.mean(self.validating.upload_bytes)) if self.validating.upload_bytes else 0)
        record = RoundRecord(
            round=number, clients=accepted, failures=len(failures), rejected=len(self.validating.rejections),
            rejections=[asdict(r) for r in self.validating.rejections], upload_bytes_per_client=upload,
            train_loss=round_metrics.get("train_loss"), metrics=round_metrics,
            epsilon=spent if s.dp_applied else None, delta=s.delta, adapter_version=self.good.version,
            published=published, seconds=round(time.perf_counter() - self.started, 2),
            candidate_version=candidate.version if candidate else None,
            gate=verdict.to_json() if verdict else None)
        with open(self.registry.root / "rounds.jsonl", "a") as f:
            f.write(json.dumps(asdict(record)) + "\n")
        log.warning("round %d: %d clients, %d failures, %d rejected, ε=%s, adapter version %d%s", number,
                    record.clients, record.failures, record.rejected, record.epsilon, record.adapter_version,
                    f" (candidate version {candidate.version} rejected by the quality gate)"
                    if candidate and candidate.rejected else "")
        self.on_round(record)
        if not published:
            # Nothing acceptable arrived, or the gate rejected it: the next round starts again from the last good.
            return None, metrics
        return aggregated, metrics


def build_strategy(settings: FederationSettings, layout: AdapterLayout, spec: AdapterSpec, registry: AdapterRegistry,
                   start: Version, progress: Version, initial: Parameters, on_round: Callable[[RoundRecord], None],
                   gate: QualityGate | None = None) -> RoundRecorder:
    # A tiny fraction makes min_fit_clients the sample size: exactly clients_per_round devices per round.
    fedavg = FedAvg(fraction_fit=1e-9, fraction_evaluate=0.0,
                    min_fit_clients=settings.clients_per_round, min_evaluate_clients=0,
                    min_available_clients=settings.min_available, initial_parameters=initial,
                    accept_failures=True)
    inner: Strategy = fedavg
    bound = settings.max_update_norm
    if settings.dp_applied:
        inner = FailureTolerantClientSideDP(fedavg, noise_multiplier=settings.noise_multiplier,
                                            clipping_norm=settings.clipping_norm,
                                            num_sampled_clients=settings.clients_per_round)
        bound = settings.clipping_norm
    validating = Validating(inner, layout, bound)
    return RoundRecorder(validating, validating, registry, start, progress, settings, spec, on_round, gate)
