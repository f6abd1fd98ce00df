"""Engine benchmark: Tidings' engine against raw llama-cpp-python, same model, same prompt.

Each variant runs in its own process, so load time and peak RSS are its own,
and the variants alternate over several rounds, so a noisy neighbour on a
shared machine slows both alike. Speeds are reported as ratios (engine / raw)
measured in the same run; the goal is a generation ratio of at least 0.95.

    python -m tidings.bench.engine_bench --out bench/results
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from tidings.device.config import Config, EngineConfig
from tidings.device.llm.prompts import FORMATS, summary_prompt
from tidings.models.registry import DEFAULT_MODEL, resolve_model
from tqdm import tqdm

DIALOGUE = (
    "Mom: Can someone pick up Lily from soccer practice at 5:30 today? I'm stuck at the dentist.\n"
    "Dad: I can't, my train gets in at 6:15.\n"
    "Mom: Alex, could you do it? She'll wait at the north gate.\n"
    "Priya: Heads up: the roadmap review moved from Thursday 10am to Friday 2pm.\n"
    "Tom: Thanks. Alex, can you send me the updated Q3 slides by Thursday end of day?"
)
GEN_TOKENS = 64


def peak_rss_mb() -> float:
    """This process's own peak RSS.

    Not getrusage's ru_maxrss: Linux carries it across exec, so a worker
    started from a big parent (pytest with a model loaded) would report the
    parent's size. VmHWM belongs to the process's own memory map.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measure(variant: str, model_name: str, threads: int, n_ctx: int, repeats: int) -> dict:
    """Runs inside a worker process: load once, then time `repeats` cold generations."""
    import llama_cpp

    model = resolve_model(model_name, Config().model.cache_dir)
    prompt = summary_prompt(FORMATS[model.spec.prompt_format if model.spec else "gemma"], DIALOGUE)
    started = time.perf_counter()
    if variant == "engine":
        from tidings.device.llm.engine import Engine

        engine = Engine(model, EngineConfig(n_ctx=n_ctx, n_threads=threads))
        llm = engine.llm

        def stream():
            return engine.stream(prompt, max_tokens=GEN_TOKENS)

        def reset():
            engine.reset_cache()
    else:
        llm = llama_cpp.Llama(model_path=str(model.path), n_ctx=n_ctx, n_threads=threads,
                              n_threads_batch=threads, verbose=False)

        def stream():
            return (c["choices"][0]["text"] for c in llm.create_completion(
                prompt.text, max_tokens=GEN_TOKENS, temperature=0.0, top_k=1, repeat_penalty=1.0, stream=True))

        def reset():
            llm.reset()
    load_s = time.perf_counter() - started
    runs = []
    for _ in range(repeats):
        reset()
        llama_cpp.llama_perf_context_reset(llm.ctx)
        t0 = time.perf_counter()
        first = None
        for _piece in stream():
            first = first or time.perf_counter() - t0
        total = time.perf_counter() - t0
        perf = llama_cpp.llama_perf_context(llm.ctx)
        runs.append({
            "ttft_s": first,
            "total_s": total,
            "prompt_tokens": perf.n_p_eval,
            "prompt_tok_s": perf.n_p_eval / (perf.t_p_eval_ms / 1000),
            "gen_tokens": perf.n_eval,
            "gen_tok_s": perf.n_eval / (perf.t_eval_ms / 1000),
        })
    return {"variant": variant, "load_s": load_s, "runs": runs, "peak_rss_mb": peak_rss_mb()}


def _worker(args: argparse.Namespace) -> None:
    print(json.dumps(_measure(args.worker, args.model, args.threads, args.n_ctx, args.repeats)))


def percentiles(values: list[float]) -> dict:
    ordered = sorted(values)
    if not ordered:
        return {"p50": None, "p95": None, "n": 0}
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50": statistics.median(ordered), "p95": p95, "n": len(ordered)}


def run(model: str, threads: int, n_ctx: int, rounds: int, repeats: int) -> dict:
    results: dict[str, list[dict]] = {"engine": [], "raw": []}
    order = [v for r in range(rounds) for v in (("raw", "engine") if r % 2 == 0 else ("engine", "raw"))]
    for variant in tqdm(order, desc="engine vs raw llama.cpp", unit="process"):
        out = subprocess.run(
            [sys.executable, "-m", "tidings.bench.engine_bench", "--worker", variant, "--model", model,
             "--threads", str(threads), "--n-ctx", str(n_ctx), "--repeats", str(repeats)],
            check=True, capture_output=True, text=True,
        ).stdout
        results[variant].append(json.loads(out.strip().splitlines()[-1]))
    report: dict = {
        "benchmark": "engine",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_model(), "cores": _cores(), "python": platform.python_version()},
        "model": model, "threads": threads, "n_ctx": n_ctx, "gen_tokens": GEN_TOKENS,
        "rounds": rounds, "repeats": repeats,
    }
    for variant, workers in results.items():
        runs = [run for w in workers for run in w["runs"]]
        report[variant] = {
            "load_s": percentiles([w["load_s"] for w in workers]),
            "ttft_s": percentiles([r["ttft_s"] for r in runs]),
            "prompt_tok_s": percentiles([r["prompt_tok_s"] for r in runs]),
            "gen_tok_s": percentiles([r["gen_tok_s"] for r in runs]),
            "prompt_tokens": runs[0]["prompt_tokens"],
            "peak_rss_mb": max(w["peak_rss_mb"] for w in workers),
        }
    report["ratios"] = {
        key: report["engine"][key]["p50"] / report["raw"][key]["p50"] for key in ("gen_tok_s", "prompt_tok_s")
    }
    report["goals"] = {"generation_ratio_vs_raw": {"goal": ">= 0.95", "value": report["ratios"]["gen_tok_s"],
                                                   "met": report["ratios"]["gen_tok_s"] >= 0.95}}
    return report


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cores() -> int:
    import os
    return len(os.sched_getaffinity(0))


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    for ax, (key, label) in zip(axes, [("prompt_tok_s", "prompt tokens/s"), ("gen_tok_s", "generated tokens/s"),
                                       ("ttft_s", "time to first token (s)")]):
        p50 = [report[v][key]["p50"] for v in ("raw", "engine")]
        p95 = [report[v][key]["p95"] for v in ("raw", "engine")]
        ax.bar(["raw llama-cpp-python", "Tidings engine"], p50, color=["#999999", "#2b7bba"])
        ax.scatter([0, 1], p95, color="black", marker="_", s=300, label="p95", zorder=3)
        ax.set_title(label)
        ax.tick_params(axis="x", labelsize=8)
    axes[-1].legend(loc="lower right")
    fig.suptitle(f"{report['model']}, {report['threads']} threads, {report['machine']['cpu']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="manifest name or GGUF path")
    parser.add_argument("--threads", type=int, default=_cores())
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=2, help="processes per variant, alternating")
    parser.add_argument("--repeats", type=int, default=5, help="timed generations per process")
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="directory for JSON and PNG")
    parser.add_argument("--worker", choices=["engine", "raw"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args)
        return 0
    report = run(args.model, args.threads, args.n_ctx, args.rounds, args.repeats)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "engine.json").write_text(json.dumps(report, indent=2))
    plot(report, args.out / "engine.png")
    for variant in ("raw", "engine"):
        r = report[variant]
        print(f"{variant:>6}: load {r['load_s']['p50']:.2f} s | TTFT p50 {r['ttft_s']['p50']:.3f} s "
              f"p95 {r['ttft_s']['p95']:.3f} s | prompt {r['prompt_tok_s']['p50']:.0f} tok/s | "
              f"generation {r['gen_tok_s']['p50']:.1f} tok/s | peak RSS {r['peak_rss_mb']:.0f} MB")
    ratio = report["ratios"]["gen_tok_s"]
    print(f"generation ratio engine/raw: {ratio:.3f} (goal >= 0.95: {'met' if ratio >= 0.95 else 'NOT met'}); "
          f"prompt ratio {report['ratios']['prompt_tok_s']:.3f}")
    print(f"saved {args.out / 'engine.json'} and {args.out / 'engine.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
