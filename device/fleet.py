"""The fleet's adapter in the running engine: the version `join` fetched for it, swapped in without a reload.

`tidings federation join` (or `fetch`) downloads and verifies versions into
the device dir; the agent only ever loads what is there, so nothing unverified
reaches the engine. The swap is AdapterStack's: the new version is loaded and
activated before the old one is unloaded, and a version that fails to load
leaves the old one active. A device that never enrolled has no versions and
runs the task adapter alone.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from tidings.device.config import Config
from tidings.device.llm.engine import Engine
from tidings.federated.device_sync import TASK, AdapterStack, LocalVersion, current_version

log = logging.getLogger("tidings")


def device_dir(config: Config) -> Path:
    """The federation's files on this device, beside its store."""
    return Path(config.store.path).parent / "federation-device"


class FleetFollower:
    def __init__(self, stack: AdapterStack, folder: Path, check_seconds: float = 30.0) -> None:
        self.stack = stack
        self.folder = Path(folder)
        self.check_seconds = check_seconds
        self._checked = -float("inf")

    def refresh(self, force: bool = False) -> LocalVersion | None:
        """Swap in the newest fetched version if it is newer than the running one; returns it if swapped."""
        if not force and time.monotonic() - self._checked < self.check_seconds:
            return None
        self._checked = time.monotonic()
        newest = current_version(self.folder)
        if newest is None or newest.version == self.stack.global_version:
            return None
        try:
            self.stack.set_global(newest)
        except (OSError, RuntimeError, ValueError) as exc:
            log.warning("adapter version %d did not load (%s): keeping version %s", newest.version, exc,
                        self.stack.global_version)
            return None
        log.warning("now running the fleet's adapter version %d (round %d)", newest.version, newest.round)
        return newest


def follow_fleet(config: Config, engine: Engine | None, task_adapter: str) -> FleetFollower | None:
    """A follower for this device's fetched versions, with the newest already active; None without any."""
    folder = device_dir(config)
    if engine is None or current_version(folder) is None:
        return None
    fed = config.federation
    stack = AdapterStack(engine, task_scale=config.model.task_adapter_scale, global_scale=fed.global_scale,
                         personal_scale=fed.personal_scale)
    if task_adapter in engine.active_adapters:
        stack.names[TASK] = task_adapter
    follower = FleetFollower(stack, folder)
    follower.refresh(force=True)
    return follower
