"""The same ServerApp and ClientApp on Flower's simulation engine: many virtual devices, one machine.

Each virtual device is a SuperNode whose data is a non-IID partition of the
training splits (partitions.py). Ray runs at most `parallel` ClientApps at
once, each with one CPU (and one torch thread), so a 2-core machine trains
two devices at a time whatever the population.
"""

from __future__ import annotations

import logging

from flwr.clientapp import ClientApp
from flwr.simulation import run_simulation

from tidings.server.server_app import make_server_app
from tidings.server.settings import FederationSettings
from tidings.server.strategy import RoundRecord

log = logging.getLogger("tidings")


def simulate(settings: FederationSettings, devices: int, *, parallel: int = 2, client_app: ClientApp | None = None,
             on_round=lambda record: None) -> list[RoundRecord]:
    """Run the rounds still missing in `settings.state_dir`; returns their records (also in rounds.jsonl)."""
    from tidings.federated.client_app import app as device_app

    if settings.secagg and settings.clients_per_round < 3:
        raise ValueError("SecAgg+ needs at least 3 clients per round")
    records: list[RoundRecord] = []

    def collect(record: RoundRecord) -> None:
        records.append(record)
        on_round(record)

    settings = settings.with_(population=settings.population or devices, threads=settings.threads or 1)
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
               "init_args": {"num_cpus": parallel, "num_gpus": 0, "include_dashboard": False,
                             "logging_level": "error", "log_to_driver": True}}
    run_simulation(server_app=make_server_app(settings, collect), client_app=client_app or device_app,
                   num_supernodes=devices, backend_config=backend)
    return records
