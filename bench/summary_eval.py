"""Summary quality on the SAMSum test set, through llama.cpp: the on-device path.

For every test dialogue, in the same run:

* adapter: the base model with the task adapter: the summarizer's first draft (beam search),
  for every dialogue, also those the device reads verbatim;
* device: what the wearer hears, by the summarizer's own plan with no wearer configured
  (third person): verbatim for a dialogue as short as a summary, else that draft if it
  passes every validator, else a sampled retry, else the fallback;
* base: the same prompt on the bare base model (baseline);
* fallback: the fallback summary alone (baseline).

ROUGE-1/2/L F1 (Google's rouge-score, stemming on) against the human
references, the share of summaries passing the grounding validator, and
published scores to place them among. Writes JSON, per-dialogue JSONL and a PNG.

    python -m tidings.bench.summary_eval --adapter models/adapters/tidings-task/adapter.gguf

`--split validation` runs the same on the slice of SAMSum validation that training holds out
(about 65 dialogues): the figure to choose between adapters and recipes by, since SAMSum test
is never tuned on.

A stopped run resumes where it stopped: finished dialogues are kept in OUT/summary_quality.partial.jsonl.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from rouge_score import rouge_scorer
from tidings.device.config import Config, EngineConfig, SummarizerConfig
from tidings.device.llm.engine import Engine
from tidings.device.summary.fallback import fallback_summary
from tidings.device.summary.grounding import check_grounding
from tidings.device.llm.prompts import render_dialogue, summary_prompt
from tidings.device.summary.summarizer import Summarizer
from tidings.models.registry import DEFAULT_MODEL, resolve_model
from tidings.models.training.data import DATA_DIR, HOLDOUT, load_samsum, split_holdout, training_dialogues
from tqdm import tqdm

PUBLISHED = {  # SAMSum test, ROUGE-1/2/L
    "t5-base zero-shot": (22.7, 6.6, 19.2),
    "bart-base fine-tuned": (44.2, 21.0, 37.5),
    "flan-t5-base fine-tuned": (47.4, 24.0, 40.1),
}
VARIANTS = ("device", "base", "fallback")  # "device" also yields "adapter"


def score(scorer: rouge_scorer.RougeScorer, rows: list[dict], variant: str) -> dict:
    scores = [scorer.score(r["reference"], r[variant]) for r in rows]
    return {
        "rouge1": 100 * statistics.fmean(s["rouge1"].fmeasure for s in scores),
        "rouge2": 100 * statistics.fmean(s["rouge2"].fmeasure for s in scores),
        "rougeL": 100 * statistics.fmean(s["rougeL"].fmeasure for s in scores),
        "grounded_share": statistics.fmean(r[f"{variant}_grounded"] for r in rows),
        "mean_words": statistics.fmean(len(r[variant].split()) for r in rows),
    }


SPLITS = {"test": "SAMSum test", "validation": "SAMSum validation, the held-out slice no adapter trains on"}


def split_dialogues(split: str):
    """SAMSum test (the reported number; never tuned on), or the validation slice training holds out (for
    choosing between adapters and recipes)."""
    if split == "test":
        return load_samsum(DATA_DIR / "samsum_test.json")
    _, held = split_holdout(training_dialogues(), HOLDOUT, seed=0)
    return [d for d in held if d.corpus == "samsum"]


def run(adapter: Path | None, limit: int | None, variants: tuple[str, ...], threads: int,
        model: str = DEFAULT_MODEL, checkpoint: Path | None = None, split: str = "test") -> tuple[dict, list[dict]]:
    """Every dialogue's row is appended to `checkpoint` as it is done; a rerun skips the rows already there.

    With no `adapter` the model summarizes zero-shot (an instruction-tuned model): "adapter" is then its own draft.
    """
    config = Config()
    model = resolve_model(model, config.model.cache_dir)
    dialogues = split_dialogues(split)[:limit]
    engine = Engine(model, EngineConfig(n_ctx=2048, n_threads=threads))
    task = {"task": 1.0} if adapter is not None else {}
    if adapter is not None:
        engine.load_adapter(adapter, "task")
    summarizer = Summarizer(SummarizerConfig(), engine)
    done: dict[str, dict] = {}
    if checkpoint is not None and checkpoint.is_file():
        for line in checkpoint.read_text().splitlines():
            row = json.loads(line)
            if all(v in row for v in variants):
                done[row["id"]] = row
    saving = checkpoint.open("a") if checkpoint is not None else None
    rows: list[dict] = []
    timings: dict[str, list[float]] = {v: [] for v in variants}
    for dialogue in tqdm(dialogues, desc=SPLITS[split].split(",")[0], unit="dialogue", initial=0):
        if dialogue.id in done:
            rows.append(done[dialogue.id])
            continue
        messages = list(dialogue.messages)
        row: dict = {"id": dialogue.id, "reference": dialogue.summary}
        prompt = summary_prompt(engine.prompt_format, render_dialogue(messages))
        for variant in variants:
            started = time.perf_counter()
            if variant == "fallback":
                text = fallback_summary(messages, summarizer.fallback_max_words)
            elif variant == "base":
                engine.set_adapters({})
                text = engine.complete(prompt, max_tokens=summarizer.config.max_summary_tokens, stop=("\n\n",)).text
            elif variant == "device":
                # The summarizer's first draft (beam search) is the adapter variant too.
                engine.set_adapters(task)
                outcome = summarizer.summary_text(messages)
                text = outcome.text
                row["device_source"] = outcome.source
                row["device_rejected"] = list(outcome.rejected)
                draft = outcome.drafts[0] if outcome.drafts else summarizer.model_summaries(messages, temperature=0.0)[0]
                row["adapter"] = " ".join(draft.split())
                row["adapter_grounded"] = check_grounding(row["adapter"], messages).ok
            timings[variant].append(time.perf_counter() - started)
            row[variant] = " ".join(text.split())
            row[f"{variant}_grounded"] = check_grounding(row[variant], messages).ok
        rows.append(row)
        if saving is not None:
            saving.write(json.dumps(row, ensure_ascii=False) + "\n")
            saving.flush()
    if saving is not None:
        saving.close()
    engine.close()
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    report = {
        "benchmark": "summary_quality",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dataset": SPLITS[split], "dialogues": len(rows),
        "model": model.name, "adapter": str(adapter) if adapter is not None else None,
        "decoding": {"device": f"{summarizer.config.summary_beams} beams, length penalty "
                               f"{summarizer.config.summary_length_penalty}", "base": "greedy"},
        "rouge": "rouge-score 0.1.2, F1, use_stemmer=True, x100",
        "results": {v: score(scorer, rows, v) | {"seconds_p50": statistics.median(timings[v]) if timings[v] else None}
                    for v in variants},
        "published": {k: dict(zip(("rouge1", "rouge2", "rougeL"), v)) for k, v in PUBLISHED.items()},
    }
    if "device" in variants:
        report["results"]["adapter"] = score(scorer, rows, "adapter")
        for source in ("model", "verbatim", "fallback"):
            report["results"]["device"][f"{source}_share"] = statistics.fmean(r["device_source"] == source for r in rows)
    return report, rows


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["results"]) + list(report["published"])
    values = [report["results"][n]["rougeL"] for n in report["results"]] + \
             [report["published"][n]["rougeL"] for n in report["published"]]
    colors = ["#2b7bba"] * len(report["results"]) + ["#bbbbbb"] * len(report["published"])
    fig, ax = plt.subplots(figsize=(9, 3.8))
    bars = ax.barh(names[::-1], values[::-1], color=colors[::-1])
    ax.bar_label(bars, fmt="%.1f", padding=3)
    ax.axvline(35, color="#d62728", ls="--", lw=1, label="floor 35")
    ax.axvline(37.5, color="#2ca02c", ls="--", lw=1, label="goal 37.5 (bart-base)")
    ax.set_xlabel(f"ROUGE-L F1 on {report['dataset'].split(',')[0]} (blue: Tidings through llama.cpp; "
                  "grey: published on SAMSum test)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", type=Path, default=Path("models/adapters/tidings-task/adapter.gguf"))
    parser.add_argument("--limit", type=int, help="only the first N test dialogues (quick look; not the reported number)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {','.join(VARIANTS)}")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--split", choices=list(SPLITS), default="test",
                        help="test: the reported number, never tuned on; validation: the held-out slice of SAMSum "
                             "validation, for choosing between adapters (default: %(default)s)")
    args = parser.parse_args(argv)
    variants = tuple(v for v in args.variants.split(",") if v)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = ("summary_quality" + ("" if args.split == "test" else f"_{args.split}")
            + (f"_first{args.limit}" if args.limit else ""))
    report, rows = run(args.adapter, args.limit, variants, args.threads,
                       checkpoint=args.out / f"{stem}.partial.jsonl", split=args.split)
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2))
    with (args.out / f"{stem}.jsonl").open("w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    plot(report, args.out / f"{stem}.png")
    (args.out / f"{stem}.partial.jsonl").unlink()
    print(f"{'variant':<12} {'R-1':>6} {'R-2':>6} {'R-L':>6} {'grounded':>9} {'words':>6}")
    for name, r in report["results"].items():
        print(f"{name:<12} {r['rouge1']:6.1f} {r['rouge2']:6.1f} {r['rougeL']:6.1f} {r['grounded_share']:9.1%} "
              f"{r['mean_words']:6.1f}")
    for name, (r1, r2, rl) in PUBLISHED.items():
        print(f"{name:<24} {r1:.1f}/{r2:.1f}/{rl:.1f} (published)")
    print(f"saved {args.out / stem}.json, .jsonl and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
