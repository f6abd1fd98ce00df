"""Canary rollout: a published version reaches a fraction of devices first, and is promoted or rolled back by
what those devices report.

    STATE/rollout.json   {"serial", "promoted", "canary", "fraction", "withdrawn": [...]}, signed (rollout.sig)
    STATE/health.json    anonymous counts reported per version

The operator's `serve` process writes it every second, and the dashboard
(server/dashboard/) when the operator promotes or rolls back by hand: every
operation holds an exclusive lock on STATE/rollout.lock and reads the state
from disk first, so the two processes never undo each other. When the registry has a
published version newer than any in the rollout, it becomes the canary:
each device decides by itself whether it is in the canary cohort, from a
secret that never leaves it (device_sync.in_canary), so the operator never
learns which devices run what. Devices report counts only: how many
summaries the model was asked for and how many of its drafts the validators
accepted, how many replies were sent and how many of those as drafted. No
device id, no text.

Once both the canary and the promoted version have `min_summaries` reported
summaries, the canary is promoted if its acceptance shares are within
`tolerance` of the promoted version's; otherwise it is rolled back: the
promoted adapter is published again as a new version (registry.rollback), so
devices on the canary move to it through the replay check, and the canary is
listed as withdrawn with its figures. A rollout the device has seen is never
replaced by one with a lower serial.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from dataclasses import asdict, dataclass, field

from tidings.federated.atomic import exclusive, write_atomically
from tidings.server.registry import AdapterRegistry

log = logging.getLogger("tidings")
COUNTS = ("summaries", "accepted_summaries", "replies", "accepted_replies")
MAX_COUNT = 10_000  # per report: anything larger is not one device's recent use


@dataclass(frozen=True)
class RolloutPolicy:
    fraction: float = 0.2  # of devices that take a canary
    min_summaries: int = 20  # reported for both the canary and the promoted version before deciding
    tolerance: float = 0.05  # acceptance shares the canary may lose


@dataclass
class RolloutState:
    serial: int = 0
    promoted: int | None = None
    canary: int | None = None
    fraction: float = 0.0
    withdrawn: list = field(default_factory=list)  # [{"version", "health", "reasons"}]


def _share(health: dict, part: str, whole: str) -> float | None:
    return health[part] / health[whole] if health.get(whole) else None


class Rollout:
    def __init__(self, registry: AdapterRegistry, policy: RolloutPolicy) -> None:
        self.registry = registry
        self.policy = policy
        self.path = registry.root / "rollout.json"
        self.health_path = registry.root / "health.json"
        self.lock = threading.Lock()
        self._load()

    def _load(self) -> None:
        self.state = RolloutState(**json.loads(self.path.read_text())) if self.path.is_file() else RolloutState()
        self.health: dict[str, dict] = json.loads(self.health_path.read_text()) if self.health_path.is_file() else {}

    @contextlib.contextmanager
    def _locked(self):
        """This process's threads and every other process on the state, with the state as it is on disk."""
        with self.lock, exclusive(self.registry.root / "rollout.lock"):
            self._load()
            yield

    def snapshot(self) -> tuple[RolloutState, dict[str, dict]]:
        with self._locked():
            return RolloutState(**asdict(self.state)), json.loads(json.dumps(self.health))

    def signed(self) -> tuple[bytes, bytes]:
        with self._locked():
            manifest = self.path.read_bytes() if self.path.is_file() else b""
            signature = (self.registry.root / "rollout.sig").read_bytes() if manifest else b""
        return manifest, signature

    def _save(self) -> None:
        self.state.serial += 1
        manifest = json.dumps(asdict(self.state), indent=2).encode()
        write_atomically(self.registry.root / "rollout.sig", self.registry.key.sign(manifest))
        write_atomically(self.path, manifest)  # after its signature: a reader never pairs a new manifest with an old one

    def sync(self) -> None:
        """Take up a newly published version: the first one is promoted, later ones start as the canary."""
        with self._locked():
            newest = self.registry.newest()
            known = max((v for v in (self.state.promoted, self.state.canary) if v is not None), default=-1)
            if newest is None or newest.version <= known:
                return
            if self.state.promoted is None or self.policy.fraction <= 0 or newest.rolled_back_to is not None:
                self.state.promoted, self.state.canary, self.state.fraction = newest.version, None, 0.0
                log.warning("rollout: version %d goes to every device", newest.version)
            else:
                self.state.canary, self.state.fraction = newest.version, self.policy.fraction
                log.warning("rollout: version %d is the canary for %.0f%% of devices", newest.version,
                            100 * self.policy.fraction)
            self._save()

    def report(self, report: dict) -> None:
        """One device's counts since its last report, for the version it runs."""
        version = report.get("version")
        counts = {name: report.get(name) for name in COUNTS}
        if not isinstance(version, int) or not all(isinstance(c, int) and 0 <= c <= MAX_COUNT
                                                    for c in counts.values()):
            raise ValueError("a health report is {version: int, summaries, accepted_summaries, replies, "
                             f"accepted_replies: counts 0..{MAX_COUNT}}}")
        if counts["accepted_summaries"] > counts["summaries"] or counts["accepted_replies"] > counts["replies"]:
            raise ValueError("a health report cannot accept more than it counted")
        with self._locked():
            if version not in (self.state.promoted, self.state.canary):
                raise ValueError(f"version {version} is not in the rollout")
            tally = self.health.setdefault(str(version), {name: 0 for name in COUNTS} | {"reports": 0})
            for name, value in counts.items():
                tally[name] += value
            tally["reports"] += 1
            write_atomically(self.health_path, json.dumps(self.health, indent=2))

    def decide(self) -> str | None:
        """Promote or roll back the canary once there is enough health reported; returns what was done."""
        with self._locked():
            canary, promoted = self.state.canary, self.state.promoted
            if canary is None:
                return None
            new, old = self.health.get(str(canary), {}), self.health.get(str(promoted), {})
            if min(new.get("summaries", 0), old.get("summaries", 0)) < self.policy.min_summaries:
                return None
            reasons = []
            for part, whole, label in (("accepted_summaries", "summaries", "summaries the validators accepted"),
                                       ("accepted_replies", "replies", "replies sent as drafted")):
                a, b = _share(new, part, whole), _share(old, part, whole)
                if a is not None and b is not None and a < b - self.policy.tolerance:
                    reasons.append(f"{label}: {a:.0%} on version {canary} against {b:.0%} on version {promoted}")
            if reasons:
                self._withdraw_canary(reasons)
                return "rolled back"
            self._promote_canary("its health")
            return "promoted"

    def promote(self) -> int:
        """The operator's call: the canary goes to every device now; returns its version."""
        with self._locked():
            if self.state.canary is None:
                raise ValueError("there is no canary to promote")
            return self._promote_canary("the operator")

    def withdraw(self) -> int:
        """The operator's call: the canary is rolled back now; returns the version devices move to."""
        with self._locked():
            if self.state.canary is None:
                raise ValueError("there is no canary to roll back")
            return self._withdraw_canary(["rolled back by the operator"])

    def _promote_canary(self, by: str) -> int:
        canary = self.state.canary
        self.state.promoted, self.state.canary, self.state.fraction = canary, None, 0.0
        self._save()
        log.warning("rollout: canary version %d promoted to every device (by %s)", canary, by)
        return canary

    def _withdraw_canary(self, reasons: list[str]) -> int:
        canary, promoted = self.state.canary, self.state.promoted
        restored = self.registry.rollback(to=promoted)
        self.state.withdrawn.append({"version": canary, "health": self.health.get(str(canary), {}),
                                     "reasons": reasons})
        self.state.promoted, self.state.canary, self.state.fraction = restored.version, None, 0.0
        self._save()
        log.warning("rollout: canary version %d ROLLED BACK (%s); version %d (= %d) goes to every device",
                    canary, "; ".join(reasons), restored.version, promoted)
        return restored.version
