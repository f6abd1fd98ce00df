"""What the operator may change from the dashboard; each action is logged, done or refused.

    promote            the canary goes to every device now
    roll back          the canary is withdrawn, or an earlier published version is published again
    revoke             a device's SuperNode key can no longer join a round

Every action is appended to STATE/deploy/actions.jsonl (when, what, with which
arguments, and what came of it) and to the log, so a change made in the page
is as traceable as one made with the CLI.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

from tidings.federated.atomic import exclusive
from tidings.server.dashboard.snapshot import Console
from tidings.server.rollout import Rollout

log = logging.getLogger("tidings")


class ActionRefused(ValueError):
    """The action cannot be done in this state (no canary, a rejected version, nothing served)."""


def promote(console: Console) -> dict:
    return _logged(console, "promote", {}, lambda: {"promoted": _rollout(console).promote()})


def roll_back(console: Console, to: int | None) -> dict:
    """`to` None: withdraw the canary; otherwise publish version `to` again, for every device."""
    def act() -> dict:
        rollout = _rollout(console)
        if to is None:
            return {"version": rollout.withdraw()}
        version = console.registry().rollback(to)
        rollout.sync()  # `serve` would within a second; without it the rollout must still say so
        return {"version": version.version, "rolled_back_to": version.rolled_back_to}

    return _logged(console, "roll back", {"to": to}, act)


def revoke(console: Console, node_id: str) -> dict:
    def act() -> dict:
        if console.operator.serving() is None:
            raise ActionRefused("nothing is served from this state directory: the SuperLink must run to revoke")
        console.operator.revoke(node_id)
        console.cache.forget_listing()
        return {"revoked": node_id}

    return _logged(console, "revoke", {"node_id": node_id}, act)


def _rollout(console: Console) -> Rollout:
    return Rollout(console.registry(), console.policy)


def _logged(console: Console, action: str, arguments: dict, act) -> dict:
    entry = {"at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "action": action, "arguments": arguments}
    try:
        entry["result"] = act()
    except (ValueError, KeyError, RuntimeError) as exc:
        entry["refused"] = str(exc).strip("'\"")
    console.actions_file.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(console.actions_file.with_suffix(".lock")), open(console.actions_file, "a") as f:
        f.write(json.dumps(entry) + "\n")
    if "refused" in entry:
        log.warning("dashboard: %s %s refused: %s", action, arguments, entry["refused"])
        raise ActionRefused(entry["refused"])
    log.warning("dashboard: %s %s: %s", action, arguments, entry["result"])
    return entry
