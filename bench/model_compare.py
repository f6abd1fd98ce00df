"""Which model should summarize: the candidates on one table, each measured the same way.

For each candidate (a base model of models/manifest.toml with the shipped task adapter made for it, or
an instruction-tuned one zero-shot), in its own process:

* faithfulness on threads written to a wearer (tidings.bench.faithfulness, through `tidings summarize
  --json`), with the model trusted to draft for the wearer (`model_drafts_for_wearer = true`): what this
  model would make of them. Faithful, complete, the share of threads too long to read verbatim whose
  summary is the model's (the rest are the fallback's), and the share of its drafts every check accepts;
* ROUGE-L on the first N SAMSum test dialogues through the device path with no wearer
  (tidings.bench.summary_eval; `--dialogues 0` for the whole test set);
* summary latency: p50 / p95 of the summarizer's whole plan (drafts, checks, fallback), timed in the
  worker over the dev suite's threads too long to read verbatim;
* whole-agent peak RSS: the worker's own high-water mark with the summarizer, STT, TTS and VAD loaded,
  as `tidings listen` loads them, after those summaries.

A candidate whose model is not installed is listed with the command that installs it. Each finished
measurement is kept in OUT/<candidate>.json, so a stopped run resumes where it stopped (`--fresh`
starts over). Prints the table, saves OUT/models.json and OUT/models.png; `--readme` puts the table
between the README's `<!-- models: start -->` and `<!-- models: end -->` markers.

    python -m tidings.bench.model_compare --out bench/results/models --readme README.md
    python -m tidings.bench.model_compare --candidate gemma3-270m+tidings-task --suite dev --dialogues 20
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tidings.bench.faithfulness import SUITES
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Candidate:
    name: str
    model: str  # a name in models/manifest.toml
    adapter: str  # a shipped adapter's name, or "" for zero-shot
    label: str


# The embedded Gemma 3 270M is a base model: without an adapter it echoes its prompt, so it has no
# zero-shot row (the summarizer does not run a base model without one).
CANDIDATES = {c.name: c for c in (
    Candidate("gemma3-270m+tidings-task", "gemma3-270m-q4_k_m-lean32k", "tidings-task",
              "Gemma 3 270M (lean 32k) + tidings-task adapter"),
    Candidate("qwen2.5-coder-0.5b", "qwen2.5-coder-0.5b-instruct-q4_k_m", "",
              "Qwen2.5-Coder 0.5B Instruct, zero-shot"),
    Candidate("qwen2.5-coder-1.5b", "qwen2.5-coder-1.5b-instruct-q4_k_m", "",
              "Qwen2.5-Coder 1.5B Instruct, zero-shot"),
)}
DEFAULT_SUITES = ("dev", "own-dev", "own-dev-2", "own-dev-3", "own-dev-4", "own-dev-5", "own-dev-6", "held-out")
RSS_GOAL_MB = 1300


def candidate_config(candidate: Candidate) -> str:
    """The device config a candidate runs under: its model and adapter, trusted to draft for the wearer."""
    return (f'[model]\nname = "{candidate.model}"\ntask_adapter = "{candidate.adapter}"\n\n'
            "[summarizer]\nmodel_drafts_for_wearer = true\n")


# -- the worker: one candidate, in its own process --------------------------------------------------


def faithfulness_figures(suites: list[str], config: Path) -> dict:
    """Per suite: faithful, complete, model share of the threads not read verbatim, drafts accepted."""
    from tidings.bench.faithfulness import run

    report = run(suites, config)
    figures = {}
    for name, suite in report["suites"].items():
        by_source = suite["by_source"]
        from_model = by_source.get("model", {}).get("threads", 0)
        not_verbatim = suite["threads"] - by_source.get("verbatim", {}).get("threads", 0)
        turned_down = sum(suite["rejections_by_check"].values())
        figures[name] = {
            "threads": suite["threads"], "faithful_rate": suite["faithful_rate"],
            "complete_rate": suite["complete_rate"], "by_source": by_source,
            "model_share_not_verbatim": from_model / not_verbatim if not_verbatim else None,
            "drafts": from_model + turned_down,
            "drafts_accepted": from_model / (from_model + turned_down) if from_model + turned_down else None,
            "rejections_by_check": suite["rejections_by_check"],
        }
    return {"suites": figures, "wall_s": report["wall_s"]}


def agent_figures(config: Path) -> dict:
    """Summary latency on the dev suite's long threads, and the whole agent's peak RSS."""
    from tidings.bench.engine_bench import peak_rss_mb, percentiles
    from tidings.bench.faithfulness import feed_lines, load_suite
    from tidings.device.agent import open_summarizer
    from tidings.device.config import load_config
    from tidings.device.messages import parse_lines
    from tidings.device.summary.verbatim import word_count
    from tidings.device.voice.stt import WhisperStt
    from tidings.device.voice.tts import HibariTts
    from tidings.device.voice.vad import SileroVad

    settings = load_config(config)
    summarizer = open_summarizer(settings)
    # Held while the summaries run, as the agent holds them: the peak is of everything together.
    speech = [WhisperStt(threads=settings.voice.stt_threads), HibariTts(), SileroVad()]
    timings = []
    for thread in load_suite(SUITES["dev"]):
        messages = list(parse_lines(json.dumps(line) for line in feed_lines([thread])))
        if word_count(messages) <= summarizer.verbatim_max_words:
            continue
        started = time.perf_counter()
        summarizer.summary_text(messages)
        timings.append(time.perf_counter() - started)
    return {"summary_latency_s": percentiles(timings), "peak_rss_mb": peak_rss_mb()}


def samsum_figures(candidate: Candidate, dialogues: int | None, checkpoint: Path) -> dict:
    from tidings.bench.summary_eval import run

    adapter = REPO / "models" / "adapters" / candidate.adapter / "adapter.gguf" if candidate.adapter else None
    report, _ = run(adapter, dialogues, ("device",), threads=0, model=candidate.model, checkpoint=checkpoint)
    device, draft = report["results"]["device"], report["results"]["adapter"]
    return {"dialogues": report["dialogues"], "rouge_l_heard": device["rougeL"], "rouge_l_drafts": draft["rougeL"],
            "model_share": device["model_share"]}


def work(candidate: Candidate, suites: list[str], dialogues: int | None, out: Path) -> dict:
    """Measure what `out/<candidate>.json` does not hold yet, saving after each measurement."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{candidate.name}.json"
    figures = json.loads(path.read_text()) if path.is_file() else {}
    if figures.get("suites_asked") != suites or figures.get("dialogues_asked") != dialogues:
        figures = {"suites_asked": suites, "dialogues_asked": dialogues}
    with tempfile.TemporaryDirectory(prefix="tidings-compare-") as tmp:
        config = Path(tmp) / "tidings.toml"
        config.write_text(f'[wearer]\nname = "Alex"\n\n{candidate_config(candidate)}')
        steps = {"faithfulness": lambda: faithfulness_figures(suites, config),
                 "agent": lambda: agent_figures(config),
                 "samsum": lambda: samsum_figures(candidate, dialogues, out / f"{candidate.name}.samsum.partial.jsonl")}
        for step, measure in steps.items():
            if step not in figures:
                started = time.monotonic()
                figures[step] = measure() | {"measured_s": round(time.monotonic() - started, 1)}
                figures["date"] = datetime.now(UTC).isoformat(timespec="seconds")
                path.write_text(json.dumps(figures, indent=2))
    return figures


# -- the comparison ----------------------------------------------------------------------------------


def installed(candidate: Candidate) -> str | None:
    """None when the candidate's model can be loaded, else the command that installs it."""
    from tidings.models.registry import is_installed, load_lean_manifest, load_manifest

    lean = load_lean_manifest().get(candidate.model)
    spec = load_manifest()[lean.base if lean else candidate.model]
    return None if is_installed(spec) else spec.install_command


def compare(names: list[str], suites: list[str], dialogues: int | None, out: Path, fresh: bool) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for name in tqdm(names, desc="candidates", unit="model"):
        candidate = CANDIDATES[name]
        if (command := installed(candidate)) is not None:
            rows[name] = {"label": candidate.label, "missing": command}
            continue
        if fresh:
            for stale in out.glob(f"{name}.*"):
                stale.unlink()
        worker = [sys.executable, "-m", "tidings.bench.model_compare", "--worker", name, "--out", str(out),
                  "--dialogues", str(dialogues or 0), *(f"--suite={s}" for s in suites)]
        subprocess.run(worker, check=True)
        rows[name] = {"label": candidate.label, **json.loads((out / f"{name}.json").read_text())}
    report = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "suites": suites,
              "dialogues": dialogues, "candidates": rows}
    (out / "models.json").write_text(json.dumps(report, indent=2))
    plot(report, out / "models.png")
    return report


def _pooled(figures: dict, suites: list[str], key: str) -> float | None:
    """A rate over the given suites, weighted by their threads."""
    chosen = [figures["suites"][s] for s in suites if s in figures["suites"]]
    if key in ("faithful_rate", "complete_rate"):
        n = sum(s["threads"] for s in chosen)
        return sum(s[key] * s["threads"] for s in chosen) / n if n else None
    if key == "drafts_accepted":
        drafts = sum(s["drafts"] for s in chosen)
        return sum(s["by_source"].get("model", {}).get("threads", 0) for s in chosen) / drafts if drafts else None
    not_verbatim = sum(s["threads"] - s["by_source"].get("verbatim", {}).get("threads", 0) for s in chosen)
    from_model = sum(s["by_source"].get("model", {}).get("threads", 0) for s in chosen)
    return from_model / not_verbatim if not_verbatim else None


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def table(report: dict) -> str:
    tuning = [s for s in report["suites"] if s != "held-out"]
    dialogues = report["dialogues"] or "all 819"
    command = ("python -m tidings.bench.model_compare " + " ".join(f"--suite {s}" for s in report["suites"])
               + f" --dialogues {report['dialogues'] or 0}")
    lines = [f"`{command}`, {report['date'][:10]}; faithfulness on the wearer suites with the model trusted to "
             f"draft for the wearer; SAMSum test ROUGE-L (heard / the model's drafts) on {dialogues} dialogues:", "",
             "| candidate | dev: faithful / complete | tuning suites: faithful / complete | held-out: faithful / "
             "complete | long threads the model speaks | drafts accepted | SAMSum ROUGE-L | summary p50 / p95 "
             "| agent peak RSS |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in report["candidates"].values():
        if "missing" in row:
            lines.append(f"| {row['label']} | not installed: `{row['missing']}` |" + " |" * 7)
            continue
        f, a, s = row["faithfulness"], row["agent"], row["samsum"]
        dev = f["suites"].get("dev")
        held = f["suites"].get("held-out")
        lines.append(
            f"| {row['label']} | {_pct(dev and dev['faithful_rate'])} / {_pct(dev and dev['complete_rate'])} | "
            f"{_pct(_pooled(f, tuning, 'faithful_rate'))} / {_pct(_pooled(f, tuning, 'complete_rate'))} | "
            f"{_pct(held and held['faithful_rate'])} / {_pct(held and held['complete_rate'])} | "
            f"{_pct(_pooled(f, report['suites'], 'model_share'))} | "
            f"{_pct(_pooled(f, report['suites'], 'drafts_accepted'))} | "
            f"{s['rouge_l_heard']:.1f} / {s['rouge_l_drafts']:.1f} | "
            f"{a['summary_latency_s']['p50']:.2f} / {a['summary_latency_s']['p95']:.2f} s | "
            f"{a['peak_rss_mb']:.0f} MB |")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {r["label"]: r for r in report["candidates"].values() if "missing" not in r}
    if not rows:
        return
    labels = list(rows)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    kinds = (("faithful_rate", "faithful"), ("complete_rate", "complete"), ("model_share", "long threads from model"),
             ("drafts_accepted", "drafts accepted"))
    width = 0.8 / len(kinds)
    for k, (key, name) in enumerate(kinds):
        values = [100 * (_pooled(rows[label]["faithfulness"], report["suites"], key) or 0) for label in labels]
        axes[0].bar([i + k * width for i in range(len(labels))], values, width, label=name)
    axes[0].set_xticks([i + 0.4 - width / 2 for i in range(len(labels))], [l.split(",")[0] for l in labels],
                       fontsize=7)
    axes[0].set_ylabel("% (all wearer suites pooled)")
    axes[0].set_ylim(0, 100)
    axes[0].legend(fontsize=7)
    axes[0].set_title("Wearer suites")
    for i, label in enumerate(labels):
        latency = rows[label]["agent"]["summary_latency_s"]
        axes[1].bar([i - 0.2, i + 0.2], [latency["p50"], latency["p95"]], 0.4, color=["C0", "C1"])
    axes[1].set_xticks(range(len(labels)), [l.split(",")[0] for l in labels], fontsize=7)
    axes[1].set_ylabel("seconds (p50 left, p95 right)")
    axes[1].set_title("Summary latency, dev long threads")
    axes[2].bar(range(len(labels)), [rows[label]["agent"]["peak_rss_mb"] for label in labels], color="C2")
    axes[2].axhline(RSS_GOAL_MB, color="k", linestyle="--", label=f"goal {RSS_GOAL_MB} MB")
    axes[2].set_xticks(range(len(labels)), [l.split(",")[0] for l in labels], fontsize=7)
    axes[2].set_ylabel("MB")
    axes[2].legend(fontsize=7)
    axes[2].set_title("Whole-agent peak RSS")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tidings.bench.model_compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidate", action="append", choices=list(CANDIDATES),
                        help="candidate to measure (repeatable; default: all)")
    parser.add_argument("--suite", action="append", choices=list(SUITES), help=f"wearer suite (repeatable; default: {', '.join(DEFAULT_SUITES)})")
    parser.add_argument("--dialogues", type=int, default=100,
                        help="SAMSum test dialogues for ROUGE-L, 0 for all 819 (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/models"),
                        help="where the figures go (default: %(default)s)")
    parser.add_argument("--fresh", action="store_true", help="measure again what an earlier run kept")
    parser.add_argument("--readme", type=Path, metavar="README", help="write the table into this README")
    parser.add_argument("--worker", choices=list(CANDIDATES), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    suites = args.suite or list(DEFAULT_SUITES)
    dialogues = args.dialogues or None
    if args.worker:
        work(CANDIDATES[args.worker], suites, dialogues, args.out)
        return 0
    report = compare(args.candidate or list(CANDIDATES), suites, dialogues, args.out, args.fresh)
    text = table(report)
    print(text)
    print(f"saved {args.out / 'models.json'} and {args.out / 'models.png'}")
    if args.readme:
        from tidings.bench.suite import replace_between_markers

        replace_between_markers(args.readme, "models", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
