"""The operator's state directory as one JSON document, read fresh on every request: what the dashboard shows.

Nothing here writes (actions.py does). A device appears by its SuperNode id and
the sha256 of its key, with the SuperLink's status for it; which version each
device runs is not known to the operator by design (rollout.py: devices choose
their canary cohort themselves and report anonymous counts), so versions show
the share of devices assigned to them and the counts reported for them.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tidings.models.registry import sha256_file
from tidings.server.operator import Operator
from tidings.server.registry import SIGNATURE, AdapterRegistry
from tidings.server.rollout import Rollout, RolloutPolicy
from tidings.server.status import read_rounds

ACTIONS_SHOWN = 50
LISTING_SECONDS = 10.0  # how long the SuperLink's device list is reused: each asking runs the flwr CLI


class NoFederationState(FileNotFoundError):
    pass


@dataclass
class ReadCache:
    """What the page's polling (every 2 s) would otherwise redo each time: hash every version's files, and
    start the flwr CLI for the device list. A file is hashed again when its size or mtime changes."""

    digests: dict[tuple[str, int, int], str] = field(default_factory=dict)
    listing: tuple[float, list[dict] | None] | None = None  # (when asked, the answer)

    def sha256(self, path: Path) -> str:
        stat = path.stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        if key not in self.digests:
            self.digests[key] = sha256_file(path)
        return self.digests[key]

    def devices_listed(self, operator: Operator) -> list[dict] | None:
        now = time.monotonic()
        if self.listing is None or now - self.listing[0] > LISTING_SECONDS:
            self.listing = (now, operator.listing())
        return self.listing[1]

    def forget_listing(self) -> None:
        """After a change to the devices: the next snapshot asks the SuperLink again."""
        self.listing = None


@dataclass(frozen=True)
class Console:
    """What the dashboard reads and acts on: one operator's state directory and its rollout policy."""

    operator: Operator
    epsilon_budget: float
    cache: ReadCache = field(default_factory=ReadCache, compare=False)

    @property
    def state_dir(self) -> Path:
        return Path(self.operator.state_dir)

    @property
    def policy(self) -> RolloutPolicy:
        return self.operator.rollout

    @property
    def actions_file(self) -> Path:
        return self.operator.root / "actions.jsonl"

    def registry(self) -> AdapterRegistry:
        if not (self.state_dir / "versions").is_dir():
            raise NoFederationState(f"no federation state in {self.state_dir}: serve or simulate there first, "
                                    "or pass --state-dir")
        return AdapterRegistry(self.state_dir)


def snapshot(console: Console) -> dict:
    registry = console.registry()
    state, health = Rollout(registry, console.policy).snapshot()
    if not state.serial:  # never served: devices fetching from the registry get its newest published version
        state.promoted = newest.version if (newest := registry.newest()) else None
    rounds = read_rounds(console.state_dir)
    serving = console.operator.serving()
    doc = {
        "state_dir": str(console.state_dir),
        "serving": None if serving is None else {"superlink": f"{serving.host}:{serving.port}",
                                                 "registry": serving.registry_url},
        "rounds": rounds,
        "versions": _versions(registry, state, health, console.cache),
        "rollout": {"serial": state.serial, "promoted": state.promoted, "canary": state.canary,
                    "canary_fraction": state.fraction, "withdrawn": state.withdrawn,
                    "signature": _rollout_signature(registry), "policy": asdict(console.policy)},
        "privacy": _privacy(rounds, console.epsilon_budget),
        "devices": _devices(console.operator, console.cache.devices_listed(console.operator) if serving else None),
        "actions": _actions(console.actions_file),
    }
    doc["revision"] = hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return doc


def _versions(registry: AdapterRegistry, state, health: dict, cache: ReadCache) -> list[dict]:
    withdrawn = {w["version"]: w["reasons"] for w in state.withdrawn}
    rows = []
    for v in registry.versions():
        folder = registry.dir(v.version)
        manifest, signature = (folder / "version.json").read_bytes(), (folder / SIGNATURE).read_bytes()
        if v.rejected:
            role, share = "rejected", 0.0
        elif v.version == state.canary:
            role, share = "canary", state.fraction
        elif v.version == state.promoted:
            role, share = "promoted", 1.0 - (state.fraction if state.canary is not None else 0.0)
        elif v.version in withdrawn:
            role, share = "withdrawn", 0.0
        else:
            role, share = "earlier", 0.0
        rows.append({
            "version": v.version, "round": v.round, "created": v.created, "sha256": v.sha256,
            "epsilon": v.epsilon if v.epsilon >= 0 else None, "rolled_back_to": v.rolled_back_to,
            "role": role, "device_share": share, "gate": v.gate or None,
            "signature": "valid" if registry.key.signed(manifest, signature) else "INVALID",
            "files": "intact" if registry.verify(v.version, digest=cache.sha256) else "CHANGED",
            "health": _health(health.get(str(v.version))),
            "withdrawn_because": withdrawn.get(v.version),
            "can_roll_back_to": role in ("earlier", "withdrawn") and not v.rejected,
        })
    return rows


def _health(counts: dict | None) -> dict | None:
    if not counts:
        return None
    share = lambda part, whole: counts[part] / counts[whole] if counts.get(whole) else None  # noqa: E731
    return {**counts, "summaries_accepted": share("accepted_summaries", "summaries"),
            "replies_as_drafted": share("accepted_replies", "replies")}


def _rollout_signature(registry: AdapterRegistry) -> str:
    manifest, signature = registry.root / "rollout.json", registry.root / "rollout.sig"
    if not manifest.is_file():
        return "none yet"
    ok = signature.is_file() and registry.key.signed(manifest.read_bytes(), signature.read_bytes())
    return "valid" if ok else "INVALID"


def _privacy(rounds: list[dict], budget: float) -> dict:
    spent = [r["epsilon"] for r in rounds if r.get("epsilon") is not None]
    undefended = [r["round"] for r in rounds if r.get("epsilon") is None]
    epsilon = spent[-1] if spent else None
    return {"epsilon": epsilon, "delta": rounds[-1]["delta"] if rounds else None, "budget": budget,
            "over_budget": epsilon is not None and epsilon > budget, "rounds_without_dp": undefended}


def _devices(operator: Operator, listing: list[dict] | None) -> dict:
    """Admitted devices joined with what the SuperLink says of them (`listing` None: not reachable)."""
    admitted = operator.devices()
    seen = {str(n.get("node-id")): n for n in listing or []}
    rows = []
    for node_id in sorted(set(admitted) | set(seen), key=lambda n: (len(n), n)):
        record, node = admitted.get(node_id, {}), seen.get(node_id, {})
        rows.append({"node_id": node_id, "key_sha256": record.get("key_sha256"), "admitted": record.get("admitted"),
                     "revoked": record.get("revoked"), "status": node.get("status"),
                     "last_seen": node.get("online-at") if node.get("status") == "online" else node.get("offline-at")})
    return {"reachable": listing is not None, "devices": rows}


def _actions(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()[-ACTIONS_SHOWN:]
    return [json.loads(line) for line in reversed(lines) if line.strip()]
