"""The fleet's adapter in the running engine: the version `join` fetched for it, swapped in without a reload.

`tidings federation join` (or `fetch`) downloads and verifies versions into
the device dir; the agent only ever loads what is there, so nothing unverified
reaches the engine. The swap is AdapterStack's: the new version is loaded and
activated before the old one is unloaded, and a version that fails to load
leaves the old one active. A device that never enrolled has no versions and
runs the task adapter alone. The wearer's personal adapter, once `tidings
federation personalize` has written one, is loaded the same way and applied to
reply drafts only.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from tidings.device.config import Config
from tidings.device.llm.engine import Engine
from tidings.device.summary.summarizer import Summarizer
from tidings.federated.device_sync import TASK, AdapterStack, LocalVersion, current_personal, current_version

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
        self._refresh_personal()
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

    def _refresh_personal(self) -> None:
        """Load the personal adapter `personalize` last wrote, for reply drafts (AdapterStack.replying)."""
        path = current_personal(self.folder)
        if path is None or self.stack.personal_file == (path, path.stat().st_mtime_ns):
            return
        try:
            self.stack.set_personal(path, f"{path.stem}-{path.stat().st_mtime_ns}")
        except (OSError, RuntimeError, ValueError) as exc:
            log.warning("the personal adapter %s did not load (%s): replies are drafted without it", path, exc)
            return
        log.info("reply drafts now use the personal adapter %s", path.name)


def follow_fleet(config: Config, engine: Engine | None, task_adapter: str,
                 summarizer: Summarizer | None = None) -> FleetFollower | None:
    """A follower for this device's fetched versions, with the newest already active; None without any.

    `summarizer` (on `engine`) drafts its replies with the wearer's personal adapter on top, when there is one.
    """
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
    if summarizer is not None:
        summarizer.reply_adapters = stack.replying
    return follower
