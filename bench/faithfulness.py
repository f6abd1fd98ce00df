"""Faithfulness on threads written to a wearer: the number that judges the summarizer.

Each suite is a list of chat threads sent to a wearer named Alex, with the facts a
correct summary keeps (`must`: groups of alternative patterns), the wrong claims it
must not make (`must_not`: the wrong person doing a thing, a lost negation, a
superseded value, a swapped direction, a scam's claim stated as fact), whether Alex is
asked a yes/no question (`ask`) and one correct reference summary. The threads go
through the real device path, `tidings summarize --json` with `[wearer] name = "Alex"`,
in a throwaway store, and every summary is scored:

* faithful: non-empty and matching no `must_not` pattern;
* complete: faithful and missing no `must` group (when Alex is asked anything, also addressing Alex);
* yes/no reply options usable: at least two distinct options, one accepting, one declining;
* per kind of ask the device found (yes/no, choice, time, open, none): the options
  offered and the share of written options that passed the option checks.

Suites (`--suite`, repeatable):

* `dev`: `../shared/data/wearer_dev.py`, 40 threads, for tuning and tests;
* `own-dev`: bench/wearer_threads/own_dev.py, threads of ours for the failure kinds
  the dev suite lacks, also for tuning;
* `own-dev-2` to `own-dev-5`: bench/wearer_threads/own_dev_2.py to own_dev_5.py, the
  first four held-out splits, tuned on since their failures were read (2026-12-01 and
  2026-12-02);
* `held-out`: bench/wearer_threads/held_out.py, threads of ours that nothing is tuned
  on, written by someone who had not seen the summarizer's output: the figure that
  says whether the tuning generalizes.

Prints the figures per suite and per path (verbatim, model, fallback), every wrong and
missing fact, and writes OUT/faithfulness.json:

    {date, wall_s, config, suites: {name: {threads, faithful, complete, yesno_asked, yesno_usable,
      faithful_rate, complete_rate, untrusted_threads, injected_claims_stated,
      by_source {source: {threads, faithful, complete}}, rejections_by_check {check: drafts},
      options_by_ask {kind found: {threads, offered, turned_down, from_model, pass_rate,
                      labelled {the suite's ask: threads}}},
      results: [{thread, source, summary, suggestions, faithful, complete, wrong, missing, rejected, ask,
                 suggestions_source, suggestions_rejected}]}}}

    python -m tidings.bench.faithfulness                       # dev suite
    python -m tidings.bench.faithfulness --suite dev --suite own-dev --suite own-dev-2 --suite own-dev-3 --suite own-dev-4 --suite own-dev-5 --suite held-out
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType

from tidings.models.training.data import DATA_DIR

HERE = Path(__file__).resolve().parent
SUITES = {
    "dev": DATA_DIR / "wearer_dev.py",
    "own-dev": HERE / "wearer_threads" / "own_dev.py",
    "own-dev-2": HERE / "wearer_threads" / "own_dev_2.py",
    "own-dev-3": HERE / "wearer_threads" / "own_dev_3.py",
    "own-dev-4": HERE / "wearer_threads" / "own_dev_4.py",
    "own-dev-5": HERE / "wearer_threads" / "own_dev_5.py",
    "own-dev-6": HERE / "wearer_threads" / "own_dev_6.py",
    "held-out": HERE / "wearer_threads" / "held_out.py",
}
WEARER = "Alex"
# The scorer's patterns for a usable yes and no, as in the shared dev suite.
YES = re.compile(r"\b(yes|yeah|sure|ok|okay|sounds good|will do|i can|i'll|count me in|i'm in|works|happy to"
                 r"|on it|definitely|of course|great|perfect)\b", re.I)
NO = re.compile(r"\b(no|can't|cannot|won't|not|unable|sorry|pass|busy|decline)\b", re.I)
ADDRESSED = r"\b(you|alex)\b|\byour?\b"


def untrusted(thread: Thread) -> bool:
    """A thread holding a scam or an injected instruction: one of its facts is that it must be flagged."""
    return any("phish" in pattern or "scam" in pattern for group in thread.must for pattern in group)


@dataclass(frozen=True)
class Thread:
    id: str
    messages: tuple[tuple[str, str], ...]  # (sender, text)
    must: tuple[tuple[str, ...], ...]
    must_not: tuple[str, ...]
    ask: str  # what the wearer is asked: "yesno", "choice", "time", "open" (own suites) or "none"
    reference: str


@dataclass(frozen=True)
class Score:
    faithful: bool
    complete: bool
    wrong: tuple[str, ...]
    missing: tuple[str, ...]
    usable: bool | None  # None when the wearer is not asked a yes/no question


def load_suite(path: Path) -> list[Thread]:
    """The threads of a suite file: a Python script holding `T` in the shared dev suite's form."""
    if not path.is_file():
        raise FileNotFoundError(f"faithfulness suite {path} not found (the shared data lives in {DATA_DIR}; "
                                "set $TIDINGS_DATA_DIR if it is elsewhere)")
    spec = importlib.util.spec_from_file_location(f"_suite_{path.stem}", path)
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [Thread(tid, tuple(map(tuple, msgs)), tuple(map(tuple, must)), tuple(must_not), ask, ref)
            for tid, msgs, must, must_not, ask, ref in module.T]


def feed_lines(threads: list[Thread]) -> list[dict]:
    """The messages in the interchange format, timed as the shared suite's `feed` times them."""
    day0 = datetime(2026, 11, 23, 8, 0, tzinfo=timezone(timedelta(hours=1)))
    lines = []
    for ti, thread in enumerate(threads):
        t = day0 + timedelta(days=ti // 8, minutes=95 * (ti % 8))
        for mi, (sender, text) in enumerate(thread.messages):
            if mi:
                t += timedelta(minutes=1 + (ti * 7 + mi * 3) % 3, seconds=(ti * 13 + mi * 29) % 60)
            lines.append({"id": f"d{ti:02d}-{mi}", "thread": thread.id, "sender": sender, "text": text,
                          "sent_at": t.isoformat()})
    return lines


def _norm(text: object) -> str:
    return re.sub(r"\s+", " ", text if isinstance(text, str) else "").strip()


def usable_options(suggestions: object) -> bool:
    if not isinstance(suggestions, list):
        return False
    options = [_norm(str(s)) for s in suggestions]
    if len(options) < 2 or len({o.lower() for o in options}) != len(options):
        return False
    accepts = any(YES.search(o) and not NO.search(o) for o in options)
    return accepts and any(NO.search(o) for o in options)


def score(thread: Thread, output: dict) -> Score:
    summary = _norm(output.get("summary"))
    wrong = tuple(p for p in thread.must_not if re.search(p, summary, re.I))
    groups = list(thread.must) + ([(ADDRESSED,)] if thread.ask != "none" else [])
    missing = tuple(" | ".join(g) for g in groups if not any(re.search(p, summary, re.I) for p in g))
    faithful = bool(summary) and not wrong
    usable = usable_options(output.get("suggestions")) if thread.ask == "yesno" else None
    return Score(faithful, faithful and not missing, wrong, missing, usable)


def summarize(threads: list[Thread], config_text: str, verbose: bool = False) -> dict[str, dict]:
    """Every thread through `tidings summarize --json` in a fresh store; output by thread id."""
    with tempfile.TemporaryDirectory(prefix="tidings-faithfulness-") as tmp:
        feed, config = Path(tmp) / "feed.jsonl", Path(tmp) / "tidings.toml"
        feed.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in feed_lines(threads)))
        config.write_text(config_text)
        command = [sys.executable, "-m", "tidings.device.cli", "--config", str(config),
                   "--store", str(Path(tmp) / "store.db"), *(["-v"] if verbose else []),
                   "summarize", str(feed), "--json"]
        done = subprocess.run(command, capture_output=True, text=True, encoding="utf-8")
        if done.returncode != 0:
            raise RuntimeError(f"tidings summarize failed ({done.returncode}):\n{done.stderr[-4000:]}")
        if verbose:
            sys.stderr.write(done.stderr)
    outputs = {}
    for line in done.stdout.splitlines():
        record = json.loads(line)
        outputs[record["thread"]] = record
    return outputs


def evaluate(threads: list[Thread], outputs: dict[str, dict]) -> dict:
    results, by_source = [], {}
    for thread in threads:
        output = outputs.get(thread.id, {})
        s = score(thread, output)
        source = output.get("source", "missing")
        results.append({"thread": thread.id, "source": source, "summary": output.get("summary", ""),
                        "suggestions": output.get("suggestions", []), "faithful": s.faithful,
                        "complete": s.complete, "wrong": list(s.wrong), "missing": list(s.missing),
                        "usable": s.usable, "rejected": output.get("rejected", []), "spam": output.get("spam"),
                        "ask": output.get("ask", "none"), "ask_labelled": thread.ask, "suggestions_source": output.get("suggestions_source"),
                        "suggestions_rejected": output.get("suggestions_rejected", [])})
        tally = by_source.setdefault(source, {"threads": 0, "faithful": 0, "complete": 0})
        tally["threads"] += 1
        tally["faithful"] += s.faithful
        tally["complete"] += s.complete
    n = len(results)
    asked = [r for r in results if r["usable"] is not None]
    return {
        "threads": n,
        "faithful": sum(r["faithful"] for r in results),
        "complete": sum(r["complete"] for r in results),
        "faithful_rate": sum(r["faithful"] for r in results) / n,
        "complete_rate": sum(r["complete"] for r in results) / n,
        "yesno_asked": len(asked),
        "yesno_usable": sum(bool(r["usable"]) for r in asked),
        # A wrong claim in a thread with a scam or injected instruction is that message's claim stated as fact.
        "untrusted_threads": sum(untrusted(t) for t in threads),
        "injected_claims_stated": sum(1 for t, r in zip(threads, results) if untrusted(t) and r["wrong"]),
        "by_source": by_source,
        # Which validator turned down the model's drafts ("subject", "superseded", ...), over every draft.
        "rejections_by_check": dict(Counter(r.split(":", 1)[0] for result in results for r in result["rejected"])),
        "options_by_ask": options_by_ask(results),
        "results": results,
    }


def options_by_ask(results: list[dict]) -> dict[str, dict]:
    """Per kind of ask the device found: threads, options offered, and the share of written options that
    passed the option checks (the rest were turned down and replaced or dropped)."""
    kinds: dict[str, dict] = {}
    for r in results:
        tally = kinds.setdefault(r["ask"], {"threads": 0, "offered": 0, "turned_down": 0, "from_model": 0,
                                            "labelled": {}})
        tally["labelled"][r["ask_labelled"]] = tally["labelled"].get(r["ask_labelled"], 0) + 1
        tally["threads"] += 1
        tally["offered"] += len(r["suggestions"])
        tally["turned_down"] += len(r["suggestions_rejected"])
        tally["from_model"] += r["suggestions_source"] == "model"
    for tally in kinds.values():
        written = tally["offered"] + tally["turned_down"]
        tally["pass_rate"] = tally["offered"] / written if written else None
    return kinds


def config_text(base: Path | None) -> str:
    """The device's config with the suite's wearer: `[wearer] name = "Alex"` over `base` (or the defaults)."""
    import tomllib

    table = tomllib.loads(base.read_text()) if base else {}
    lines = [f'[wearer]\nname = "{WEARER}"\n']
    for section, values in table.items():
        if section == "wearer":
            continue
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {json.dumps(value) if not isinstance(value, bool) else str(value).lower()}"
                     for key, value in values.items())
    return "\n".join(lines) + "\n"


def report_text(name: str, suite: dict) -> str:
    n = suite["threads"]
    lines = [f"{name}: faithful {suite['faithful']}/{n} ({100 * suite['faithful_rate']:.1f}%), "
             f"complete {suite['complete']}/{n} ({100 * suite['complete_rate']:.1f}%), "
             f"yes/no reply options usable {suite['yesno_usable']}/{suite['yesno_asked']}, "
             f"injected claims stated {suite['injected_claims_stated']} (of {suite['untrusted_threads']} untrusted threads)"]
    for source, tally in sorted(suite["by_source"].items()):
        lines.append(f"  {source:>9}: {tally['threads']:2d} threads, faithful {tally['faithful']}, "
                     f"complete {tally['complete']}")
    if suite["rejections_by_check"]:
        lines.append("  model drafts turned down by: " + ", ".join(
            f"{check} {n}" for check, n in sorted(suite["rejections_by_check"].items(), key=lambda kv: -kv[1])))
    lines.append("  reply options by ask: " + ", ".join(
        f"{kind} {t['threads']} threads, {t['offered']} offered"
        + (f", {100 * t['pass_rate']:.0f}% of written passed" if t["pass_rate"] is not None else "")
        for kind, t in sorted(suite["options_by_ask"].items())))
    for r in suite["results"]:
        if not r["complete"]:
            what = (f"WRONG {r['wrong']}" if r["wrong"] else "") + (f" missing {r['missing']}" if r["missing"] else "")
            lines.append(f"  - {r['thread']} [{r['source']}]{what.rstrip()}\n      {r['summary'][:300]}")
    return "\n".join(lines)


def results_markdown(report: dict) -> str:
    """The README's table of this run, per suite and per path."""
    command = "python -m tidings.bench.faithfulness " + " ".join(f"--suite {name}" for name in report["suites"])
    lines = [f"`{command}`, {report['date'][:10]} ({report['wall_s'] / 60:.1f} min), embedded default model with "
             "its task adapter:", "",
             "| suite | faithful | complete | yes/no options usable | injected claims stated | verbatim / model / "
             "fallback (complete) |", "|---|---|---|---|---|---|"]
    for name, suite in report["suites"].items():
        paths = " / ".join(f"{tally['threads']} ({tally['complete']})" if (tally := suite["by_source"].get(path))
                           else "0" for path in ("verbatim", "model", "fallback"))
        lines.append(f"| {name} ({suite['threads']}) | {100 * suite['faithful_rate']:.1f}% | "
                     f"{100 * suite['complete_rate']:.1f}% | {suite['yesno_usable']}/{suite['yesno_asked']} | "
                     f"{suite['injected_claims_stated']} of {suite['untrusted_threads']} | {paths} |")
    return "\n".join(lines) + "\n"


def update_readme(readme: Path, table: str) -> None:
    from tidings.bench.suite import replace_between_markers

    replace_between_markers(readme, "faithfulness", table)


def run(suites: list[str], base_config: Path | None, verbose: bool = False) -> dict:
    started = time.monotonic()
    text = config_text(base_config)
    report = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "config": text, "suites": {}}
    for name in suites:
        threads = load_suite(SUITES[name])
        report["suites"][name] = evaluate(threads, summarize(threads, text, verbose))
        report["suites"][name]["source_file"] = str(SUITES[name])
    report["wall_s"] = round(time.monotonic() - started, 1)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tidings.bench.faithfulness", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", action="append", choices=list(SUITES),
                        help="suite to run (repeatable; default: dev)")
    parser.add_argument("--config", type=Path, help="device config to start from (default: the built-in defaults)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/faithfulness"),
                        help="where faithfulness.json goes (default: %(default)s)")
    parser.add_argument("--readme", type=Path, metavar="README",
                        help="also write the results table between this file's faithfulness markers")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the device's log")
    args = parser.parse_args(argv)
    report = run(args.suite or ["dev"], args.config, args.verbose)
    for name, suite in report["suites"].items():
        print(report_text(name, suite))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "faithfulness.json"
    path.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    (args.out / "results.md").write_text(results_markdown(report))
    if args.readme:
        update_readme(args.readme, results_markdown(report))
    print(f"wrote {path} and results.md ({report['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
