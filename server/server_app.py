"""The ServerApp: rounds of validated, privacy-protected FedAvg on the federated adapter, from the newest version.

On start it opens the adapter registry in `state-dir`; the newest version is
the starting point and its round the offset, so a ServerApp (or SuperLink)
that died resumes after the last completed round and runs only the rounds
still missing to `rounds`. An empty registry starts at version 0: the
federated adapter at PEFT's initialization (no effect) on top of the shipped
task adapter. Every round publishes a version (registry.py) and appends its
record to `rounds.jsonl`.

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
    remaining = settings.rounds - start.round
    if remaining <= 0:
        log.warning("the global adapter is at round %d of %d: nothing to do", start.round, settings.rounds)
        return
    log.warning("starting from adapter version %d (round %d): %d round(s) to go", start.version, start.round,
                remaining)
    initial = ndarrays_to_parameters(layout.to_list(registry.arrays(start.version)))
    strategy = build_strategy(settings, layout, spec, registry, start, initial, on_round)
    legacy = LegacyContext(context, config=ServerConfig(num_rounds=remaining, round_timeout=settings.round_timeout),
                           strategy=strategy)
    fit_workflow = None
    if settings.secagg:
        fit_workflow = SecAggPlusWorkflow(num_shares=settings.secagg_shares,
                                          reconstruction_threshold=settings.secagg_threshold,
                                          max_weight=float(settings.max_examples), timeout=settings.round_timeout)
    DefaultWorkflow(fit_workflow=fit_workflow)(grid, legacy)


def make_server_app(settings: FederationSettings | None = None,
                    on_round: Callable[[RoundRecord], None] = lambda record: None) -> ServerApp:
    """A ServerApp with these settings (in-process simulation), or reading Flower's run config (deployment)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_server(grid, context, settings or FederationSettings.from_run_config(dict(context.run_config)), on_round)

    return app


app = make_server_app()
