"""Lean against full vocabulary: same weights, same adapter, same SAMSum test dialogues.

For the full model and each lean model (models/trim.py), in one run:

* quality: every SAMSum test dialogue through the device path with the shipped
  task adapter (tidings.bench.summary_eval); the share of summaries identical
  to the full model's (the greedy draft, and what the wearer hears), the same
  share among dialogues whose full-model summary uses only kept tokens (the
  lean model can say nothing else, so there it must be 100%), and ROUGE-L
  against the references;
* speed and memory, each model in its own process, alternating over rounds:
  generation tokens/s while summarizing, time per token of JSON-grammar
  decoding (llama.cpp's grammar sampler walks the whole vocabulary), and the
  process's peak RSS with the adapter loaded.

A lean model qualifies as the default when its summaries (the greedy drafts)
are identical to the full model's for at least 95% of dialogues and its
ROUGE-L (what the wearer hears) is within 0.3 points. What the wearer hears
is compared too, but a draft that fails the checks is retried by sampling, and
the lean engine samples with numpy, not llama.cpp's sampler: identical
distributions, different draws. Writes DIR/lean_vs_full.json, per-model rows, and DIR/lean_vs_full.png.

    python -m tidings.bench.lean_eval --out bench/results/lean          # whole test set
    python -m tidings.bench.lean_eval --limit 40 --rounds 1             # a quick look
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from tidings.bench.engine_bench import cpu_model, peak_rss_mb
from tidings.bench.summary_eval import run as summary_run
from tidings.device.config import Config
from tidings.models.registry import (
    DEFAULT_MODEL,
    load_lean_manifest,
    resolve_adapter,
    resolve_model,
    sha256_file,
)
from tqdm import tqdm

IDENTICAL_GOAL = 0.95
ROUGE_L_TOLERANCE = 0.3
SPEED_DIALOGUES = 12
GRAMMAR_DIALOGUES = 4
GRAMMAR_SCHEMA = {
    "type": "object",
    "properties": {"summary": {"type": "string", "maxLength": 160},
                   "urgency": {"type": "string", "enum": ["low", "normal", "high"]}},
    "required": ["summary", "urgency"],
}


def _rows(model_name: str, adapter: Path, limit: int | None, threads: int, out: Path) -> list[dict]:
    """Per-dialogue summaries of one model, reused from an earlier run with the same files and limit."""
    config = Config()
    model = resolve_model(model_name, config.model.cache_dir)
    key = f"{model.name}-{sha256_file(model.path)[:12]}-{sha256_file(adapter)[:12]}-{limit or 'all'}"
    path = out / "rows" / f"{key}.jsonl"
    if path.is_file():
        return [json.loads(line) for line in path.read_text().splitlines()]
    _, rows = summary_run(adapter, limit, ("device",), threads, model_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def compare(full: list[dict], lean: list[dict], kept: np.ndarray, full_model_path: Path) -> dict:
    import llama_cpp
    from rouge_score import rouge_scorer

    vocab = llama_cpp.Llama(model_path=str(full_model_path), vocab_only=True, verbose=False)
    kept_set = set(kept.tolist())
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    in_kept = [all(t in kept_set for t in vocab.tokenize(r["adapter"].encode(), add_bos=False)) for r in full]
    same = [f["adapter"] == g["adapter"] for f, g in zip(full, lean)]
    rouge = {name: 100 * statistics.fmean(scorer.score(r["reference"], r["device"])["rougeL"].fmeasure for r in rows)
             for name, rows in (("full", full), ("lean", lean))}
    return {
        "identical_draft_share": statistics.fmean(same),
        "identical_device_share": statistics.fmean(f["device"] == g["device"] for f, g in zip(full, lean)),
        "full_summaries_all_kept_share": statistics.fmean(in_kept),
        "identical_when_all_kept_share": (statistics.fmean(s for s, k in zip(same, in_kept) if k)
                                          if any(in_kept) else None),
        "rouge_l": rouge["lean"], "rouge_l_full": rouge["full"], "rouge_l_difference": rouge["lean"] - rouge["full"],
    }


def _worker(model_name: str, threads: int) -> dict:
    """In its own process: summarize a few dialogues and decode JSON under a grammar; speeds and peak RSS."""
    import llama_cpp
    from tidings.device.config import EngineConfig
    from tidings.device.llm.engine import Engine
    from tidings.device.llm.prompts import render_dialogue, summary_prompt, user_turn
    from tidings.models.training.data import DATA_DIR, load_samsum

    config = Config()
    model = resolve_model(model_name, config.model.cache_dir)
    engine = Engine(model, EngineConfig(n_threads=threads))
    engine.load_adapter(resolve_adapter(config.model.task_adapter, model), "task")
    engine.set_adapters({"task": 1.0})
    dialogues = load_samsum(DATA_DIR / "samsum_test.json")[:SPEED_DIALOGUES]
    eval_ms = eval_tokens = 0.0
    for d in dialogues:
        engine.complete(summary_prompt(engine.prompt_format, render_dialogue(d.messages)), max_tokens=64)
        perf = llama_cpp.llama_perf_context(engine.llm.ctx)
        eval_ms += perf.t_eval_ms
        eval_tokens += perf.n_eval
    grammar = llama_cpp.LlamaGrammar.from_json_schema(json.dumps(GRAMMAR_SCHEMA), verbose=False)
    grammar_s = grammar_tokens = 0.0
    for d in dialogues[:GRAMMAR_DIALOGUES]:
        prompt = user_turn(engine.prompt_format, f"{render_dialogue(d.messages)}\n\nSummarize this chat as JSON "
                                                 "with keys \"summary\" and \"urgency\".")
        started = time.perf_counter()
        tokens = engine.tokenizer.prepare(prompt)
        for _ in engine.llm.create_completion(tokens, max_tokens=80, temperature=0.0, top_k=1, repeat_penalty=1.0,
                                              grammar=grammar, stream=True):
            grammar_tokens += 1
        grammar_s += time.perf_counter() - started
    return {"gen_tok_s": eval_tokens / (eval_ms / 1000), "grammar_ms_per_token": 1000 * grammar_s / grammar_tokens,
            "peak_rss_mb": peak_rss_mb(),
            "file_mb": model.path.stat().st_size / 1e6}


def measure_speed(models: list[str], threads: int, rounds: int) -> dict[str, dict]:
    jobs = [(r, m) for r in range(rounds) for m in (models if r % 2 == 0 else models[::-1])]
    runs: dict[str, list[dict]] = {m: [] for m in models}
    for _, name in tqdm(jobs, desc="speed and memory", unit="process"):
        out = subprocess.run([sys.executable, "-m", "tidings.bench.lean_eval", "--worker", name,
                              "--threads", str(threads)], check=True, capture_output=True, text=True).stdout
        runs[name].append(json.loads(out.strip().splitlines()[-1]))
    return {m: {key: statistics.median(r[key] for r in rs) for key in rs[0]} for m, rs in runs.items()}


def run(models: list[str], limit: int | None, threads: int, rounds: int, out: Path) -> dict:
    config = Config()
    full_model = resolve_model(DEFAULT_MODEL, config.model.cache_dir)
    adapter = resolve_adapter(config.model.task_adapter, full_model)
    lean_specs = load_lean_manifest()
    rows = {name: _rows(name, adapter, limit, threads, out) for name in [DEFAULT_MODEL, *models]}
    speed = measure_speed([DEFAULT_MODEL, *models], threads, rounds)
    full_rows = rows[DEFAULT_MODEL]
    report: dict = {
        "benchmark": "lean_vs_full", "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_model()}, "threads": threads, "rounds": rounds,
        "dataset": "SAMSum test", "dialogues": len(full_rows), "adapter": str(adapter),
        "full": {"name": DEFAULT_MODEL} | speed[DEFAULT_MODEL],
        "goals": {"identical_share": f">= {IDENTICAL_GOAL}", "rouge_l_difference": f"within {ROUGE_L_TOLERANCE}",
                  "decode_ratio": ">= 1.8", "rss_ratio": "<= 0.6"},
        "lean": [],
    }
    for name in models:
        spec = lean_specs[name]
        entry = {"name": name, "kept": spec.kept, "held_out_coverage": spec.held_out_coverage}
        entry |= compare(full_rows, rows[name], np.load(spec.kept_ids_path), full_model.path)
        entry |= speed[name]
        entry["decode_ratio"] = speed[name]["gen_tok_s"] / speed[DEFAULT_MODEL]["gen_tok_s"]
        entry["rss_ratio"] = speed[name]["peak_rss_mb"] / speed[DEFAULT_MODEL]["peak_rss_mb"]
        entry["grammar_ratio"] = speed[DEFAULT_MODEL]["grammar_ms_per_token"] / speed[name]["grammar_ms_per_token"]
        entry["quality_ok"] = (entry["identical_draft_share"] >= IDENTICAL_GOAL
                               and abs(entry["rouge_l_difference"]) <= ROUGE_L_TOLERANCE)
        report["lean"].append(entry)
    qualified = [e for e in report["lean"] if e["quality_ok"]]
    report["recommended_default"] = min(qualified, key=lambda e: e["kept"])["name"] if qualified else DEFAULT_MODEL
    return report


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lean = sorted(report["lean"], key=lambda e: e["kept"])
    labels = [f"{e['kept'] // 1024}k" for e in lean]
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.2))
    axes[0].bar(labels, [100 * e["identical_draft_share"] for e in lean], color="#2b7bba")
    axes[0].axhline(100 * IDENTICAL_GOAL, color="#d62728", ls=":", lw=1)
    axes[0].set_ylabel("% greedy summaries identical to full")
    axes[1].bar(labels, [e["rouge_l_difference"] for e in lean], color="#6a9f3a")
    for bound in (-ROUGE_L_TOLERANCE, ROUGE_L_TOLERANCE):
        axes[1].axhline(bound, color="#d62728", ls=":", lw=1)
    axes[1].set_ylabel("ROUGE-L, lean - full")
    width = 0.38
    x = np.arange(len(lean))
    axes[2].bar(x - width / 2, [e["decode_ratio"] for e in lean], width, label="decode speed")
    axes[2].bar(x + width / 2, [e["rss_ratio"] for e in lean], width, label="peak RSS")
    axes[2].axhline(1.8, color="#1f77b4", ls=":", lw=1)
    axes[2].axhline(0.6, color="#ff7f0e", ls=":", lw=1)
    axes[2].set_xticks(x, labels)
    axes[2].set_ylabel("lean / full")
    axes[2].legend(fontsize=7)
    for ax in axes:
        ax.set_xlabel("kept tokens")
    fig.suptitle(f"lean vs full vocabulary, {report['dialogues']} SAMSum test dialogues (dotted: goals)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(load_lean_manifest()),
                        help="comma-separated lean models from the manifest (default: all)")
    parser.add_argument("--limit", type=int, help="first N test dialogues only (default: all 819)")
    parser.add_argument("--threads", type=int, default=2, help="threads per model (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=2, help="speed processes per model (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/lean"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.worker, args.threads)))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    report = run([m for m in args.models.split(",") if m], args.limit, args.threads, args.rounds, args.out)
    (args.out / "lean_vs_full.json").write_text(json.dumps(report, indent=2))
    plot(report, args.out / "lean_vs_full.png")
    full = report["full"]
    print(f"full: {full['gen_tok_s']:.1f} tok/s, grammar {full['grammar_ms_per_token']:.1f} ms/token, "
          f"peak RSS {full['peak_rss_mb']:.0f} MB, {full['file_mb']:.0f} MB file")
    print(f"{'lean':<8} {'identical':>9} {'heard':>6} {'ROUGE-L':>8} {'diff':>6} {'decode':>7} {'RSS':>6} "
          f"{'grammar':>8}  ok")
    for e in report["lean"]:
        print(f"{e['kept'] // 1024:>6}k {e['identical_draft_share']:9.1%} {e['identical_device_share']:6.1%} "
              f"{e['rouge_l']:8.2f} "
              f"{e['rouge_l_difference']:+6.2f} {e['decode_ratio']:6.2f}x {e['rss_ratio']:6.2f} "
              f"{e['grammar_ratio']:7.1f}x  {'yes' if e['quality_ok'] else 'no'}")
    print(f"recommended default: {report['recommended_default']}")
    print(f"saved {args.out / 'lean_vs_full.json'} and {args.out / 'lean_vs_full.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
