"""`tidings federation ...`: run and inspect federated rounds (operator), fetch and personalize (device).

Flower and torch are imported only inside the commands: the rest of the CLI stays fast.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

from tidings.device.config import Config, FederationConfig
from tidings.device.fleet import device_dir

log = logging.getLogger("tidings")


def settings_from(fed: FederationConfig, state_dir: Path, **changes):
    from tidings.server.settings import FederationSettings

    return FederationSettings(
        state_dir=str(Path(state_dir).resolve()), rounds=fed.rounds, clients_per_round=fed.clients_per_round,
        min_available=fed.clients_per_round, local_steps=fed.local_steps, learning_rate=fed.learning_rate,
        secagg=fed.secagg, dp=fed.dp, dp_min_clients=fed.dp_min_clients, noise_multiplier=fed.noise_multiplier, clipping_norm=fed.clipping_norm,
        delta=fed.delta, compression=fed.compression, gate=fed.gate, gate_dialogues=fed.gate_dialogues,
        gate_threads=fed.gate_threads, gate_rouge_tolerance=fed.gate_rouge_tolerance,
        gate_faithful_tolerance=fed.gate_faithful_tolerance,
        gate_complete_tolerance=fed.gate_complete_tolerance).with_(**changes)


def _state_dir(args, config: Config) -> Path:
    return Path(args.state_dir or config.federation.state_dir).expanduser()


def _overrides(args) -> dict:
    changes = {}
    for name in ("rounds", "clients_per_round", "local_steps", "noise_multiplier", "clipping_norm", "compression",
                 "dp_min_clients"):
        value = getattr(args, name, None)
        if value is not None:
            changes[name] = value
    if getattr(args, "no_secagg", False):
        changes["secagg"] = False
    if getattr(args, "no_dp", False):
        changes["dp"] = False
    if getattr(args, "no_gate", False):
        changes["gate"] = False
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
            eps = "∞ (no DP)" if record.epsilon is None else f"{record.epsilon:.2f}"
            print(f"round {record.round}: {record.clients} clients, {record.failures} failed, {record.rejected} "
                  f"rejected, upload {record.upload_bytes_per_client / 1e6:.3f} MB/client, ε {eps}, "
                  f"adapter v{record.adapter_version}", flush=True)

    simulate(settings, args.devices, parallel=args.parallel, on_round=show)
    return 0


def _operator(args, config: Config, serving_host: bool = True):
    """`serving_host` False: --host and --port are another server's (the dashboard's), not the SuperLink's."""
    from tidings.server.operator import Operator
    from tidings.server.rollout import RolloutPolicy

    fed = config.federation
    fraction = getattr(args, "canary_fraction", None)
    policy = RolloutPolicy(fed.canary_fraction if fraction is None else fraction, fed.canary_min_summaries,
                           fed.canary_tolerance)
    host, port = (getattr(args, "host", None), args.port) if serving_host else (None, None)
    return Operator(_state_dir(args, config), host=host or fed.host, port=port or fed.port,
                    registry_port=getattr(args, "registry_port", None) or fed.registry_port, rollout=policy)


def cmd_serve(args, config: Config) -> int:
    import signal
    import threading

    from tidings.server.operator import OperatorError

    operator = _operator(args, config)
    stop_event = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop_event.set())

    def ready(serving) -> None:
        tls = operator.root / "tls" / "ca.crt"
        print(f"tidings: SuperLink on {serving.host}:{serving.port} (TLS, SuperNode auth); versions on "
              f"{serving.registry_url}\n  devices enrol with {tls} and {operator.state_dir / 'keys' / 'signing.pub'};"
              f" admit each with `tidings federation admit DEVICE.pub`; Ctrl-C stops", file=sys.stderr, flush=True)

    try:
        operator.serve(stop_event, on_ready=ready)
    except (OperatorError, OSError) as exc:
        print(f"tidings: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _served(operator) -> bool:
    if operator.serving() is None:
        print(f"tidings: error: nothing is served from {operator.state_dir}: start `tidings federation serve` "
              "there first", file=sys.stderr)
        return False
    return True


def cmd_admit(args, config: Config) -> int:
    from tidings.server.operator import OperatorError

    operator = _operator(args, config)
    if not _served(operator):
        return 2
    for key in args.public_key:
        try:
            node_id = operator.admit(key)
        except OperatorError as exc:
            print(f"tidings: error: {exc}", file=sys.stderr)
            return 2
        print(f"tidings: admitted the device with key {key} as SuperNode {node_id}", file=sys.stderr)
    return 0


def cmd_run(args, config: Config) -> int:
    from tidings.server.operator import OperatorError

    operator = _operator(args, config)
    if not _served(operator):
        return 2
    settings = settings_from(config.federation, operator.state_dir, **_overrides(args))
    try:
        record = operator.run(settings)
    except OperatorError as exc:
        print(f"tidings: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"run_id": record.get("run-id"), "status": record.get("status"),
                      "elapsed": record.get("elapsed")}))
    return 0 if record.get("status") == "finished:completed" else 1


def cmd_status(args, config: Config) -> int:
    from tidings.server.status import collect, plot, render

    operator = _operator(args, config)
    nodes = operator.listing() if operator.serving() else None
    status = collect(operator.state_dir, nodes)
    print(json.dumps(status.to_json()) if args.json else render(status))
    if args.plot:
        print(f"tidings: plot saved to {plot(status, args.plot)}", file=sys.stderr)
    return 0


def cmd_rollback(args, config: Config) -> int:
    from tidings.server.registry import AdapterRegistry

    version = AdapterRegistry(_state_dir(args, config)).rollback(args.to)
    print(json.dumps({"version": version.version, "rolled_back_to": version.rolled_back_to, "sha256": version.sha256}))
    return 0


def _registry(args, config: Config) -> str:
    fed = config.federation
    return str(args.registry or fed.registry or fed.state_dir)


def _base_sha256(config: Config) -> str:
    from tidings.models.registry import resolve_model

    base = resolve_model(config.model.name, config.model.cache_dir)
    return base.spec.sha256 if base.spec else ""


def cmd_fetch(args, config: Config) -> int:
    from tidings.federated.device_sync import IntegrityError, RegistryUnreachable, fetch_newest

    try:
        local = fetch_newest(_registry(args, config), device_dir(config), base_sha256=_base_sha256(config))
    except (IntegrityError, RegistryUnreachable) as exc:
        print(f"tidings: {exc}; this device keeps the version it has", file=sys.stderr)
        return 1
    print(json.dumps({"version": local.version, "round": local.round, "gguf": str(local.gguf)}))
    return 0


def cmd_enroll(args, config: Config) -> int:
    from tidings.federated.device_sync import IntegrityError, pin_operator_ca, pin_operator_key

    try:
        path = pin_operator_key(device_dir(config), args.operator_key.read_bytes())
        if args.ca:
            pin_operator_ca(device_dir(config), args.ca.read_bytes())
    except (IntegrityError, OSError) as exc:
        print(f"tidings: error: {exc}", file=sys.stderr)
        return 2
    print(f"tidings: this device now trusts adapter versions signed by the key in {path}"
          + (f" and the operator's TLS endpoints certified by {args.ca}" if args.ca else ""), file=sys.stderr)
    return 0


def cmd_device_key(args, config: Config) -> int:
    from tidings.federated.join import device_key

    _, public = device_key(device_dir(config))
    sys.stdout.write(public.read_text())
    print(f"tidings: this device's SuperNode key is {public}; the operator admits it with "
          "`tidings federation admit node-key.pub`", file=sys.stderr)
    return 0


def cmd_join(args, config: Config) -> int:
    import signal
    import threading

    from tidings.federated.device_sync import OPERATOR_CA
    from tidings.federated.join import DeviceNode, JoinError

    fed = config.federation
    superlink = args.superlink or fed.superlink
    if not superlink:
        print("tidings: error: no SuperLink to join: --superlink HOST:PORT or [federation] superlink",
              file=sys.stderr)
        return 2
    node = DeviceNode(device_dir(config), config.store.path, superlink, _registry(args, config),
                      base_sha256=_base_sha256(config), host=args.host or fed.device_host,
                      port=args.port or fed.device_port, poll_seconds=args.poll or fed.poll_seconds)
    if not (device_dir(config) / OPERATOR_CA).is_file():
        print(f"tidings: error: this device has not enrolled with an operator ({device_dir(config)}): "
              "`tidings federation enroll --operator-key signing.pub --ca ca.crt` first", file=sys.stderr)
        return 2
    stop_event = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop_event.set())
    print(f"tidings: joining the federation at {superlink} (SuperNode on {node.host}:{node.port}); versions from "
          f"{node.registry}; Ctrl-C stops", file=sys.stderr, flush=True)
    try:
        node.join(stop_event)
    except JoinError as exc:
        print(f"tidings: error: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_dashboard(args, config: Config) -> int:
    import secrets

    from tidings.server.dashboard.app import is_loopback, serve
    from tidings.server.dashboard.snapshot import Console, NoFederationState

    console = Console(_operator(args, config, serving_host=False), config.federation.epsilon_budget)
    try:
        console.registry()
    except NoFederationState as exc:
        print(f"tidings: error: {exc}", file=sys.stderr)
        return 2
    token = args.token or (None if is_loopback(args.host) else secrets.token_urlsafe(24))
    query = f"?token={token}" if token else ""
    print(f"tidings: the operator console for {console.state_dir} is on http://{args.host}:{args.port}/{query}"
          "  (Ctrl-C stops)", file=sys.stderr, flush=True)
    try:
        serve(console, args.host, args.port, token, verbose=args.verbose)
    except OSError as exc:
        print(f"tidings: error: cannot serve on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
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
    result = personalize(with_store, _registry(args, config), device_dir(config), steps=args.steps,
                         keep=fed.keep_examples, max_age_days=fed.max_age_days)
    print(json.dumps(result))
    return 0


def add_federation_parser(sub) -> None:
    p = sub.add_parser("federation", help="federated personalization: serve, join, run rounds, fetch adapters",
                       description="Operators serve a SuperLink and an HTTPS registry of signed adapter versions and "
                       "run federated rounds; wearers' devices join with their own key, train on their own accepted "
                       "and edited summaries and replies, send only adapter updates (SecAgg+, central DP) and fetch "
                       "each new version the operator signed.")
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
            q.add_argument("--dp-min-clients", type=int,
                           help="apply DP only from this many devices per round (default: [federation] dp_min_clients)")
            q.add_argument("--no-gate", action="store_true",
                           help="publish every round without the quality gate (trials only: devices get what comes)")

    def serving_address(q) -> None:
        q.add_argument("--host", help="the address the SuperLink and registry listen on (default: [federation] host)")

    q = fsub.add_parser("simulate", help="many virtual devices on Flower's simulation engine")
    common(q)
    q.add_argument("--devices", type=int, required=True, help="virtual devices (non-IID partitions)")
    q.add_argument("--parallel", type=int, default=2, help="ClientApps training at once (default: %(default)s)")
    q.add_argument("--fresh", action="store_true", help="start from version 0 instead of resuming")
    q.add_argument("--json", action="store_true", help="one JSON object per round")
    q.set_defaults(func=cmd_simulate)

    q = fsub.add_parser("serve", help="operator: run the SuperLink (TLS, SuperNode auth) and the HTTPS registry",
                        description="Runs until Ctrl-C. Devices need the CA (STATE/deploy/tls/ca.crt) and the "
                        "signing key (STATE/keys/signing.pub) to enrol, and must be admitted to join.")
    common(q, rounds=False)
    serving_address(q)
    q.add_argument("--registry-port", type=int, help="HTTPS registry port (default: [federation] registry_port)")
    q.add_argument("--canary-fraction", type=float,
                   help="share of devices a new version reaches first; 0: all at once (default: [federation] "
                   "canary_fraction)")
    q.set_defaults(func=cmd_serve)

    q = fsub.add_parser("admit", help="operator: let the devices with these SuperNode keys join")
    common(q, rounds=False)
    serving_address(q)
    q.add_argument("public_key", type=Path, nargs="+", help="a device's node-key.pub (`federation device-key`)")
    q.set_defaults(func=cmd_admit)

    q = fsub.add_parser("run", help="operator: run federated rounds on the devices that joined; waits until they end")
    common(q)
    serving_address(q)
    q.set_defaults(func=cmd_run)

    q = fsub.add_parser("status", help="operator: rounds, devices, loss, ε and adapter versions")
    common(q, rounds=False)
    serving_address(q)
    q.add_argument("--json", action="store_true")
    q.add_argument("--plot", type=Path, help="also save a PNG of the metrics per round")
    q.set_defaults(func=cmd_status)

    q = fsub.add_parser("rollback", help="operator: publish an earlier adapter version again as the newest")
    common(q, rounds=False)
    q.add_argument("--to", type=int, required=True, help="the version to go back to")
    q.set_defaults(func=cmd_rollback)

    q = fsub.add_parser("dashboard", help="operator: a web console of rounds, ε, versions, rollout and devices",
                        description="Serves the operator's console: rounds, privacy spent, every version with its "
                        "quality-gate figures and signature, the canary and the devices, updated live; promote, "
                        "roll back and revoke from the page (each asks first and is logged in "
                        "STATE/deploy/actions.jsonl). On a non-loopback address it needs a token, printed with "
                        "the address.")
    q.add_argument("--state-dir", type=Path, help="operator state (default: [federation] state_dir)")
    q.add_argument("--host", default="127.0.0.1", help="address to serve the console on (default: %(default)s)")
    q.add_argument("--port", type=int, default=39480, help="its port (default: %(default)s)")
    q.add_argument("--token", help="require this token (default: none on loopback, a random one elsewhere)")
    q.set_defaults(func=cmd_dashboard)

    q = fsub.add_parser("signing-key", help="operator: print the public key that signs every published version")
    common(q, rounds=False)
    q.set_defaults(func=cmd_signing_key)

    q = fsub.add_parser("device-key", help="device: print this device's SuperNode public key (made once)")
    q.set_defaults(func=cmd_device_key)

    q = fsub.add_parser("enroll", help="device: pin the operator's signing key and TLS CA")
    q.add_argument("--operator-key", type=Path, required=True, help="the operator's signing.pub")
    q.add_argument("--ca", type=Path, help="the operator's ca.crt (needed to join and to fetch over https)")
    q.set_defaults(func=cmd_enroll)

    q = fsub.add_parser("join", help="device: take part in rounds and fetch each new version, until Ctrl-C")
    q.add_argument("--superlink", help="the operator's SuperLink, HOST:PORT (default: [federation] superlink)")
    q.add_argument("--registry", help="the operator's registry, https://HOST:PORT (default: [federation] registry)")
    q.add_argument("--host", help="address of this device's SuperNode API (default: [federation] device_host)")
    q.add_argument("--port", type=int, help="its port (default: [federation] device_port)")
    q.add_argument("--poll", type=float, help="seconds between registry checks (default: [federation] poll_seconds)")
    q.set_defaults(func=cmd_join)

    q = fsub.add_parser("fetch", help="device: fetch the newest published version, if the operator signed it")
    q.add_argument("--registry", help="https://HOST:PORT or a directory (default: [federation] registry)")
    q.set_defaults(func=cmd_fetch)

    q = fsub.add_parser("personalize", help="device: train the personal adapter on this wearer's data")
    q.add_argument("--registry", help="https://HOST:PORT or a directory (default: [federation] registry)")
    q.add_argument("--steps", type=int, help="optimizer steps (default: federated/personal.py PERSONAL_TRAINING)")
    q.set_defaults(func=cmd_personalize)
