"""`tidings federation ...`: run and inspect federated rounds (operator), fetch and personalize (device).

Flower and torch are imported only inside the commands: the rest of the CLI stays fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

from tidings.device.config import Config, FederationConfig

log = logging.getLogger("tidings")


def settings_from(fed: FederationConfig, state_dir: Path, **changes):
    from tidings.server.settings import FederationSettings

    return FederationSettings(
        state_dir=str(Path(state_dir).resolve()), rounds=fed.rounds, clients_per_round=fed.clients_per_round,
        min_available=fed.clients_per_round, local_steps=fed.local_steps, learning_rate=fed.learning_rate,
        secagg=fed.secagg, dp=fed.dp, noise_multiplier=fed.noise_multiplier, clipping_norm=fed.clipping_norm,
        delta=fed.delta, compression=fed.compression).with_(**changes)


def _state_dir(args, config: Config) -> Path:
    return Path(args.state_dir or config.federation.state_dir).expanduser()


def _overrides(args) -> dict:
    changes = {}
    for name in ("rounds", "clients_per_round", "local_steps", "noise_multiplier", "clipping_norm", "compression"):
        value = getattr(args, name, None)
        if value is not None:
            changes[name] = value
    if getattr(args, "no_secagg", False):
        changes["secagg"] = False
    if getattr(args, "no_dp", False):
        changes["dp"] = False
    return changes


def cmd_simulate(args, config: Config) -> int:
    from tidings.federated.simulation import simulate

    state = _state_dir(args, config) / "simulation" if not args.state_dir else _state_dir(args, config)
    if args.fresh:
        shutil.rmtree(state, ignore_errors=True)
    changes = _overrides(args)
    changes.setdefault("clients_per_round", min(args.devices, config.federation.clients_per_round))
    settings = settings_from(config.federation, state, min_available=args.devices, **changes)

    def show(record) -> None:
        if args.json:
            print(json.dumps(asdict(record)), flush=True)
        else:
            eps = "off" if record.epsilon is None else f"{record.epsilon:.2f}"
            print(f"round {record.round}: {record.clients} clients, {record.failures} failed, {record.rejected} "
                  f"rejected, upload {record.upload_bytes_per_client / 1e6:.3f} MB/client, ε {eps}, "
                  f"adapter v{record.adapter_version}", flush=True)

    simulate(settings, args.devices, parallel=args.parallel, on_round=show)
    return 0


def _deployment(args, config: Config):
    from tidings.server.deploy import Deployment

    return Deployment(_state_dir(args, config), port=args.port or config.federation.port)


def cmd_up(args, config: Config) -> int:
    from tidings.server.deploy import up

    count = args.supernodes or config.federation.supernodes
    state = up(_deployment(args, config), count, args.store or None)
    print(f"tidings: SuperLink on 127.0.0.1:{state.port} (TLS, SuperNode auth), {len(state.supernodes)} SuperNodes "
          f"started", file=sys.stderr)
    return 0


def cmd_run(args, config: Config) -> int:
    from tidings.server.deploy import run

    deployment = _deployment(args, config)
    settings = settings_from(config.federation, deployment.state_dir, **_overrides(args))
    record = run(deployment, settings)
    print(json.dumps({"run_id": record.get("run-id"), "status": record.get("status"),
                      "elapsed": record.get("elapsed")}))
    return 0 if record.get("status") == "finished:completed" else 1


def cmd_status(args, config: Config) -> int:
    from tidings.server.status import collect, plot, render

    deployment = _deployment(args, config)
    nodes = deployment.listing() if deployment.load() else None
    status = collect(deployment.state_dir, nodes)
    print(json.dumps(status.to_json()) if args.json else render(status))
    if args.plot:
        print(f"tidings: plot saved to {plot(status, args.plot)}", file=sys.stderr)
    return 0


def cmd_down(args, config: Config) -> int:
    from tidings.server.deploy import down

    print(f"tidings: stopped {down(_deployment(args, config))} process group(s)", file=sys.stderr)
    return 0


def cmd_rollback(args, config: Config) -> int:
    from tidings.server.registry import AdapterRegistry

    version = AdapterRegistry(_state_dir(args, config)).rollback(args.to)
    print(json.dumps({"version": version.version, "rolled_back_to": version.rolled_back_to, "sha256": version.sha256}))
    return 0


def device_dir(config: Config) -> Path:
    return Path(config.store.path).parent / "federation-device"


def cmd_fetch(args, config: Config) -> int:
    from tidings.federated.device_sync import IntegrityError, fetch_newest
    from tidings.models.registry import resolve_model

    base = resolve_model(config.model.name, config.model.cache_dir)
    try:
        local = fetch_newest(args.registry or config.federation.registry, device_dir(config),
                             base_sha256=base.spec.sha256 if base.spec else "")
    except IntegrityError as exc:
        print(f"tidings: {exc}; this device keeps the version it has", file=sys.stderr)
        return 1
    print(json.dumps({"version": local.version, "round": local.round, "gguf": str(local.gguf)}))
    return 0


def cmd_enroll(args, config: Config) -> int:
    from tidings.federated.device_sync import IntegrityError, pin_operator_key

    try:
        path = pin_operator_key(device_dir(config), args.operator_key.read_bytes())
    except IntegrityError as exc:
        print(f"tidings: error: {exc}", file=sys.stderr)
        return 2
    print(f"tidings: this device now trusts adapter versions signed by the key in {path}", file=sys.stderr)
    return 0


def cmd_signing_key(args, config: Config) -> int:
    from tidings.server.registry import AdapterRegistry

    registry = AdapterRegistry(_state_dir(args, config))
    sys.stdout.buffer.write(registry.public_key_pem)
    print(f"tidings: the operator's public key is {registry.root / 'keys' / 'signing.pub'}; give it to each "
          "device: `tidings federation enroll --operator-key signing.pub`", file=sys.stderr)
    return 0


def cmd_personalize(args, config: Config) -> int:
    from tidings.federated.personal import personalize

    fed = config.federation
    with_store = config.store.path
    result = personalize(with_store, args.registry or fed.registry, device_dir(config), steps=args.steps,
                         keep=fed.keep_examples, max_age_days=fed.max_age_days)
    print(json.dumps(result))
    return 0


def add_federation_parser(sub) -> None:
    p = sub.add_parser("federation", help="federated personalization: simulate, deploy, run rounds, fetch adapters",
                       description="Operators run federated rounds on the fleet's adapter; devices train on their own "
                       "accepted and edited summaries and replies and send only adapter updates (SecAgg+, central DP).")
    fsub = p.add_subparsers(dest="federation_command", required=True, metavar="ACTION")

    def common(q, rounds: bool = True) -> None:
        q.add_argument("--state-dir", type=Path, help="operator state (default: [federation] state_dir)")
        q.add_argument("--port", type=int, help="SuperLink port (default: [federation] port)")
        if rounds:
            q.add_argument("--rounds", type=int, help="total global rounds (a resumed run does the missing ones)")
            q.add_argument("--clients-per-round", type=int)
            q.add_argument("--local-steps", type=int)
            q.add_argument("--noise-multiplier", type=float)
            q.add_argument("--clipping-norm", type=float)
            q.add_argument("--compression", choices=("none", "fp16", "int8"))
            q.add_argument("--no-secagg", action="store_true", help="without SecAgg+ (each update is validated)")
            q.add_argument("--no-dp", action="store_true", help="without central differential privacy")

    q = fsub.add_parser("simulate", help="many virtual devices on Flower's simulation engine")
    common(q)
    q.add_argument("--devices", type=int, required=True, help="virtual devices (non-IID partitions)")
    q.add_argument("--parallel", type=int, default=2, help="ClientApps training at once (default: %(default)s)")
    q.add_argument("--fresh", action="store_true", help="start from version 0 instead of resuming")
    q.add_argument("--json", action="store_true", help="one JSON object per round")
    q.set_defaults(func=cmd_simulate)

    q = fsub.add_parser("up", help="start a SuperLink and SuperNodes on 127.0.0.1 (TLS, SuperNode auth)")
    common(q, rounds=False)
    q.add_argument("--supernodes", type=int, help="how many (default: [federation] supernodes)")
    q.add_argument("--store", type=Path, action="append", help="a device store per SuperNode (repeat)")
    q.set_defaults(func=cmd_up)

    q = fsub.add_parser("run", help="run federated rounds on the deployment; waits until they end")
    common(q)
    q.set_defaults(func=cmd_run)

    q = fsub.add_parser("status", help="rounds, devices, loss, ε and adapter versions")
    common(q, rounds=False)
    q.add_argument("--json", action="store_true")
    q.add_argument("--plot", type=Path, help="also save a PNG of the metrics per round")
    q.set_defaults(func=cmd_status)

    q = fsub.add_parser("down", help="stop the deployment started by `up`")
    common(q, rounds=False)
    q.set_defaults(func=cmd_down)

    q = fsub.add_parser("rollback", help="publish an earlier adapter version again as the newest")
    common(q, rounds=False)
    q.add_argument("--to", type=int, required=True, help="the version to go back to")
    q.set_defaults(func=cmd_rollback)

    q = fsub.add_parser("signing-key", help="operator: print the public key that signs every published version")
    common(q, rounds=False)
    q.set_defaults(func=cmd_signing_key)

    q = fsub.add_parser("enroll", help="device: pin the operator's public key (only versions it signed are used)")
    q.add_argument("--operator-key", type=Path, required=True, help="the operator's signing.pub")
    q.set_defaults(func=cmd_enroll)

    q = fsub.add_parser("fetch", help="device: fetch the newest published global adapter, if the operator signed it")
    q.add_argument("--registry", type=Path, help="where versions are published (default: [federation] registry)")
    q.set_defaults(func=cmd_fetch)

    q = fsub.add_parser("personalize", help="device: train the personal adapter on this wearer's data")
    q.add_argument("--registry", type=Path, help="where versions are published (default: [federation] registry)")
    q.add_argument("--steps", type=int, default=4)
    q.set_defaults(func=cmd_personalize)
