"""The ServerApp: rounds of validated, privacy-protected FedAvg on the federated adapter, from the newest version.

On start it opens the adapter registry in `state-dir`; the newest version is
the starting point and its round the offset, so a ServerApp (or SuperLink)
that died resumes after the last completed round and runs only the rounds
still missing to `rounds`. An empty registry starts at version 0: the
federated adapter at PEFT's initialization (no effect) on top of the shipped
task adapter. Every round's candidate goes through the quality gate
(quality_gate.py): published as a version if it passes, kept as a rejected
version if not (registry.py); either way the round's record is appended to
`rounds.jsonl`.

SecAgg+ (`secagg`) runs Flower's `SecAggPlusWorkflow` as the fit workflow;
it needs at least 3 clients per round.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from flwr.app import Context
from flwr.common import ndarrays_to_parameters
from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

from tidings.federated.adapter import AdapterSpec
from tidings.federated.task import embedded_model, layout_for
from tidings.server.quality_gate import QualityGate, Tolerance
from tidings.server.registry import AdapterRegistry
from tidings.server.settings import FederationSettings
from tidings.server.strategy import RoundRecord, build_strategy

log = logging.getLogger("tidings")


def run_server(grid: Grid, context: Context, settings: FederationSettings,
               on_round: Callable[[RoundRecord], None] = lambda record: None) -> None:
    spec = AdapterSpec(settings.rank, settings.alpha, tuple(settings.modules.split(",")), settings.frozen_a)
    base = embedded_model()
    layout = layout_for(base, spec)
    registry = AdapterRegistry(settings.state_path, base_sha256=base.spec.sha256)
    start = registry.newest()
    if start is None:
        start = registry.publish(layout.initial(settings.seed), spec, layout.fingerprint, round=0, metrics={},
                                 privacy_history=[], epsilon=0.0, delta=settings.delta)
    if start.layout != layout.fingerprint:
        raise ValueError(f"the registry's adapter layout {start.layout} is not this run's {layout.fingerprint}")
    progress = registry.latest()  # a rejected round still counts, and so does its privacy spent
    remaining = settings.rounds - progress.round
    if remaining <= 0:
        log.warning("the global adapter is at round %d of %d: nothing to do", progress.round, settings.rounds)
        return
    log.warning("starting from adapter version %d (round %d): %d round(s) to go", start.version, progress.round,
                remaining)
    if settings.dp and not settings.dp_applied:
        log.warning("CENTRAL DP IS OFF: with %d devices per round its noise (std %.3g on every value) would wreck "
                    "the adapter; it is applied from %d devices per round (dp_min_clients). ε is infinite: SecAgg+ "
                    "still hides each device's update, but the published adapter has no DP guarantee",
                    settings.clients_per_round, settings.noise_multiplier * settings.clipping_norm
                    / settings.clients_per_round, settings.dp_min_clients)
    if not settings.gate:
        log.warning("the quality gate is off: every round is published to devices as it comes")
    gate = QualityGate(settings.state_path, dialogues=settings.gate_dialogues, threads=settings.gate_threads,
                       tolerance=Tolerance(settings.gate_rouge_tolerance, settings.gate_faithful_tolerance,
                                           settings.gate_complete_tolerance)) if settings.gate else None
    initial = ndarrays_to_parameters(layout.to_list(registry.arrays(start.version)))
    strategy = build_strategy(settings, layout, spec, registry, start, progress, initial, on_round, gate)
    legacy = LegacyContext(context, config=ServerConfig(num_rounds=remaining, round_timeout=settings.round_timeout),
                           strategy=strategy)
    fit_workflow = None
    if settings.secagg:
        fit_workflow = SecAggPlusWorkflow(num_shares=settings.secagg_shares,
                                          reconstruction_threshold=settings.secagg_threshold,
                                          max_weight=float(settings.max_examples), timeout=settings.round_timeout)
    try:
        DefaultWorkflow(fit_workflow=fit_workflow)(grid, legacy)
    finally:
        if gate is not None:
            gate.close()


def make_server_app(settings: FederationSettings | None = None,
                    on_round: Callable[[RoundRecord], None] = lambda record: None) -> ServerApp:
    """A ServerApp with these settings (in-process simulation), or reading Flower's run config (deployment)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_server(grid, context, settings or FederationSettings.from_run_config(dict(context.run_config)), on_round)

    return app


app = make_server_app()
