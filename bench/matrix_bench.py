"""Matrix latency: a message someone sends -> its announcement spoken, through a real homeserver.

    python -m tidings.bench.matrix_bench --out bench/results          # 16 + 16 arrivals, about 4 minutes
    python -m tidings.bench.matrix_bench --quick --out /tmp/matrix    # 4 + 4, under 2 minutes

A Synapse from the `matrix-synapse` package runs on 127.0.0.1 (bench/homeserver.py),
with one direct room per sender. The wearer's device is the real thing: the
Matrix connector on its own thread (as `tidings listen --matrix` runs it, with
its long-polling sync at the device default) and the voice loop of the voice
benchmark (bench/voice_bench.make_loop: the device's summarizer and speech
engines, timing wrappers, a scripted microphone saying "Next." between
arrivals so the dialog is idle when the next message comes).

Two kinds of arrival alternate in the same run:
- matrix: a sender's message is PUT to the homeserver's client-server API;
  timed from just before the request to the play() of the announcement that
  names the sender. Parts: homeserver -> store (until the connector has
  committed the sync and woken the loop) and store -> spoken.
- direct: the same kind of message inserted straight into the store, as the
  voice benchmark's arrivals are: the baseline. The ratio of the two p95s is
  what the homeserver path costs on top.
An arrival that finds the dialog busy (a misheard "Next.") is reported, not timed.

Saves matrix.json and matrix.png in --out. JSON keys: benchmark, date, quick,
machine, versions, sync_timeout_ms, matrix {summary, parts {homeserver_to_store,
store_to_spoken}, timed, not_timed, trials}, direct {summary, timed, not_timed,
trials}, ratio_p95 (matrix p95 / direct p95). Summaries are {p50, p95, mean, max, n}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from tqdm import tqdm

from tidings.bench.homeserver import Homeserver
from tidings.bench.speech_corpus import Turn, script_audio
from tidings.bench.voice_bench import (
    ARRIVAL_TEXTS,
    SENDERS,
    machine_facts,
    make_loop,
    summarize_values,
    versions,
)
from tidings.device.agent import open_summarizer
from tidings.device.config import Config, with_overrides
from tidings.device.matrix.client import login
from tidings.device.matrix.connector import ConnectorSettings, ConnectorThread, MatrixConnector
from tidings.device.messages import Message
from tidings.device.store import Store
from tidings.device.summary.wearer import Wearer
from tidings.device.voice.dialog import State
from tidings.device.voice.stt import WhisperStt
from tidings.device.voice.tts import open_tts

WEARER = "Alex"
PASSWORD = "bench-password"
GAP = 4.5  # silence between the wearer's "Next."s: one arrival per gap
LEAD = 2.0  # an arrival comes this long before the next "Next."


def run(arrivals: int, out: Path, *, quick: bool = False, progress: bool = True) -> dict:
    senders = [name for name in SENDERS if name != WEARER][:arrivals * 2]
    if len(senders) < arrivals * 2:
        raise ValueError(f"at most {len([n for n in SENDERS if n != WEARER]) // 2} arrivals of each kind")
    machine = machine_facts()
    config = with_overrides(Config(), wearer={"name": WEARER, "aliases": ()})
    with tempfile.TemporaryDirectory(prefix="matrix-bench-") as tmp, Homeserver(Path(tmp) / "synapse") as hs:
        alex = hs.register("alex", PASSWORD, displayname=WEARER)
        matrix_senders = senders[0::2]
        rooms = {}
        accounts = {}
        for name in matrix_senders:
            accounts[name] = hs.register(name.lower(), PASSWORD, displayname=name)
            rooms[name] = hs.create_room(accounts[name], None, (alex.user_id,), direct=True)
            hs.join(alex, rooms[name])
        db = Path(tmp) / "device.db"
        credentials = asyncio.run(login(hs.url, alex.user_id, password=PASSWORD))
        settings = ConnectorSettings(sync_timeout_ms=config.matrix.sync_timeout_ms)
        keys = Path(tmp) / "keys"
        asyncio.run(MatrixConnector(credentials, db, wearer=Wearer(WEARER), keys_dir=keys,
                                    settings=settings).run_once())  # the device's first sync: history

        summarizer = open_summarizer(config)
        tts, stt = open_tts(config.voice), WhisperStt(threads=config.voice.stt_threads)
        script = script_audio(tts, [Turn(LEAD + 3.0 if i == 0 else GAP, "Next.") for i in range(arrivals * 2)])
        store = Store(db)
        rig = make_loop(store, summarizer, tts, stt, script.audio, config)
        woken: list[float] = []

        def synced(report) -> None:
            woken.append(time.monotonic())
            rig.loop.messages_arrived()

        link = ConnectorThread(MatrixConnector(credentials, db, wearer=Wearer(WEARER), keys_dir=keys,
                                               settings=settings, on_messages=synced))
        link.start()
        sent: list[dict] = []
        failure: list[BaseException] = []
        bar = tqdm(total=arrivals * 2, desc="matrix: arrivals", unit="msg", disable=not progress)

        def arrive() -> None:
            try:
                with Store(db) as mine:
                    while rig.source.started is None or not link.connector.synced:
                        time.sleep(0.002)
                    for i, (start, _, _) in enumerate(script.spans):
                        time.sleep(max(0.0, rig.source.started + start - LEAD - time.monotonic()))
                        sender, kind = senders[i], ("matrix", "direct")[i % 2]
                        text = ARRIVAL_TEXTS[i % len(ARRIVAL_TEXTS)]
                        state = rig.loop.dialog.state
                        at = time.monotonic()
                        if kind == "matrix":
                            hs.send(accounts[sender], rooms[sender], text)
                        else:
                            mine.add([Message(f"direct-{i}", f"direct-{i}", sender, text,
                                              datetime.now(timezone.utc))], "matrix-bench")
                            rig.loop.messages_arrived()
                        sent.append({"sender": sender, "kind": kind, "at": at, "dialog_state": state.value})
                        bar.update()
            except BaseException as exc:  # reported after the loop ends
                failure.append(exc)

        arrivals_thread = threading.Thread(target=arrive, name="matrix-bench-arrivals")
        arrivals_thread.start()
        rig.loop.run()
        arrivals_thread.join()
        link.stop()
        bar.close()
        store.close()
        if failure:
            raise failure[0]
        if link.error:
            raise link.error
    machine["load_avg_end"] = list(os.getloadavg())
    report = {"benchmark": "matrix", "date": datetime.now(timezone.utc).isoformat(), "quick": quick,
              "machine": machine, "versions": versions(), "sync_timeout_ms": settings.sync_timeout_ms,
              **score(sent, rig.sink.plays, woken)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "matrix.json").write_text(json.dumps(report, indent=2))
    plot(report, out / "matrix.png")
    return report


def score(sent: list[dict], plays, woken: list[float]) -> dict:
    result: dict = {}
    for kind in ("matrix", "direct"):
        trials, totals, to_store, to_speech, not_timed = [], [], [], [], []
        for item in (s for s in sent if s["kind"] == kind):
            play = next((p for p in plays if p.at >= item["at"] and f"from {item['sender']}" in p.text), None)
            wake = next((w for w in woken if w >= item["at"]), None) if kind == "matrix" else None
            trial = {"sender": item["sender"], "dialog_state": item["dialog_state"],
                     "latency_s": play.at - item["at"] if play else None,
                     "homeserver_to_store_s": wake - item["at"] if wake is not None else None,
                     "announcement": play.text if play else None}
            trials.append(trial)
            if item["dialog_state"] != State.IDLE.value or play is None:
                not_timed.append({**trial, "reason": "dialog busy at arrival" if play else "never announced"})
                continue
            totals.append(trial["latency_s"])
            if wake is not None and wake <= play.at:
                to_store.append(wake - item["at"])
                to_speech.append(play.at - wake)
        result[kind] = {"summary": summarize_values(totals), "timed": len(totals), "not_timed": not_timed,
                        "trials": trials}
        if kind == "matrix":
            result[kind]["parts"] = {"homeserver_to_store": summarize_values(to_store),
                                     "store_to_spoken": summarize_values(to_speech)}
    m, d = result["matrix"]["summary"]["p95"], result["direct"]["summary"]["p95"]
    result["ratio_p95"] = m / d if m and d else None
    return result


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    values = [[t["latency_s"] for t in report[k]["trials"] if t["latency_s"] is not None] for k in ("matrix", "direct")]
    left.boxplot(values, tick_labels=["through Synapse", "straight into the store"])
    left.set_ylabel("message sent → announcement spoken (s)")
    left.set_title(f"p95 {report['matrix']['summary']['p95'] or 0:.2f} s vs {report['direct']['summary']['p95'] or 0:.2f} s")
    parts = report["matrix"]["parts"]
    names = ["homeserver_to_store", "store_to_spoken"]
    p50 = [parts[n]["p50"] or 0 for n in names]
    right.barh(["p50"], [p50[0]], label="homeserver → store")
    right.barh(["p50"], [p50[1]], left=[p50[0]], label="store → spoken")
    right.set_xlabel("seconds")
    right.set_title("where the time goes (matrix arrivals)")
    right.legend(loc="lower right")
    m = report["machine"]
    fig.suptitle(f"Tidings over Matrix, {m['cpu']}, {m['cores']} cores")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_report(report: dict) -> None:
    for kind, label in (("matrix", "through Synapse"), ("direct", "straight into the store (baseline)")):
        s = report[kind]["summary"]
        if s["n"]:
            print(f"message sent → announcement spoken, {label}: p50 {s['p50']:.3f} s, p95 {s['p95']:.3f} s "
                  f"(n={s['n']}, not timed {len(report[kind]['not_timed'])})")
        else:
            print(f"message sent → announcement spoken, {label}: nothing timed")
    parts = report["matrix"]["parts"]
    if parts["homeserver_to_store"]["n"]:
        print(f"  homeserver → store p50 {parts['homeserver_to_store']['p50']:.3f} s, "
              f"store → spoken p50 {parts['store_to_spoken']['p50']:.3f} s")
    if report["ratio_p95"]:
        print(f"p95 ratio, Synapse path / baseline: {report['ratio_p95']:.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tidings.bench.matrix_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="where matrix.json/png go")
    parser.add_argument("--arrivals", type=int, default=16, help="arrivals of each kind (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="4 arrivals of each kind")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the device does")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("tidings").setLevel(logging.INFO if args.verbose else logging.WARNING)
    report = run(4 if args.quick else args.arrivals, args.out, quick=args.quick)
    print_report(report)
    print(f"saved {args.out / 'matrix.json'} and {args.out / 'matrix.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
