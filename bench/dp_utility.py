"""What central DP's noise costs the summaries, by cohort size: where DP can be on without wrecking the adapter.

    python -m tidings.bench.dp_utility --out bench/results        # ~8 min on 2 idle cores

Central DP adds Gaussian noise of std z*C/m to the mean of the m clipped
updates of a round (server/strategy.py); FedAvg sums the rounds' means, so
after R rounds the global adapter carries noise of std z*C*sqrt(R)/m on every
value it trains (FFA-LoRA's B). This bench isolates that noise: for each
cohort size m and noise multiplier z it adds exactly that noise to the
initial global adapter (B = 0: no effect without noise), stacks it on the task
adapter as a device does, and measures ROUGE-L on held-out SAMSum validation
dialogues and faithfulness on the wearer dev suite (bench/candidate_eval.py),
against the task adapter alone. Beside each row is the ε those R rounds spend
at δ = 1e-5 when the m devices are a sample of the population.

The noise alone is a lower bound on DP's cost (the clipped updates it hides
are signal, and clipping itself loses some); the federated bench measures
the trained adapter with DP end to end. The noise does not depend on the
data, so the utility a cohort size allows is the same for every deployment:
the default `dp_min_clients` (server/settings.py) is the smallest cohort
measured here whose noise costs less than 1 ROUGE-L point.

Writes OUT/dp_utility.json and OUT/dp_utility.png; a stopped run resumes
from OUT/dp_utility.partial.jsonl.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

GOAL_DROP = 1.0  # ROUGE-L points


def noised_initial(seed: int, std: float):
    from tidings.federated.adapter import AdapterSpec
    from tidings.federated.task import embedded_model, layout_for

    spec = AdapterSpec()
    layout = layout_for(embedded_model(), spec)
    rng = np.random.default_rng(seed)
    arrays = {name: (value + rng.normal(0.0, std, value.shape).astype(np.float32)) if ".lora_B." in name else value
              for name, value in layout.initial(0).items()}
    return arrays, spec


def run(cohorts: list[int], multipliers: list[float], rounds: int, population: int, dialogues: int, threads: int,
        clipping_norm: float, out: Path, seed: int = 0) -> dict:
    from tidings.bench.candidate_eval import CandidateEvaluator
    from tidings.federated.adapter import export_gguf
    from tidings.server.privacy import epsilon

    out.mkdir(parents=True, exist_ok=True)
    partial = out / "dp_utility.partial.jsonl"
    done = {(r["clients"], r["noise_multiplier"]): r for r in map(json.loads, partial.read_text().splitlines())} \
        if partial.is_file() else {}
    evaluator = CandidateEvaluator(dialogues, threads, progress=True)
    try:
        baseline = done.get((0, 0.0)) or {"clients": 0, "noise_multiplier": 0.0, **evaluator.evaluate(None).to_json()}
        if (0, 0.0) not in done:
            with open(partial, "a") as f:
                f.write(json.dumps(baseline) + "\n")
        rows = []
        for z in multipliers:
            for m in cohorts:
                if (m, z) in done:
                    rows.append(done[(m, z)])
                    continue
                std = z * clipping_norm * math.sqrt(rounds) / m
                arrays, spec = noised_initial(seed, std)
                with tempfile.TemporaryDirectory() as tmp:
                    figures = evaluator.evaluate(export_gguf(arrays, spec, Path(tmp) / "noised.gguf")).to_json()
                history = [[z, min(1.0, m / population)]] * rounds
                row = {"clients": m, "noise_multiplier": z, "noise_std": std,
                       "epsilon": epsilon(history, 1e-5), **figures,
                       "rouge_l_drop": baseline["rouge_l"] - figures["rouge_l"]}
                print(f"z={z} m={m}: noise std {std:.4g}, ε {row['epsilon']:.2f}, ROUGE-L {figures['rouge_l']:.2f} "
                      f"(drop {row['rouge_l_drop']:.2f}), faithful {figures['faithful_rate']:.3f}", flush=True)
                with open(partial, "a") as f:
                    f.write(json.dumps(row) + "\n")
                rows.append(row)
    finally:
        evaluator.close()
    smallest = {}
    for z in multipliers:
        ok = [r["clients"] for r in rows if r["noise_multiplier"] == z and r["rouge_l_drop"] <= GOAL_DROP
              and r["faithful_rate"] >= baseline["faithful_rate"]]
        smallest[str(z)] = min(ok) if ok else None
    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.machine(),
              "rounds": rounds, "population": population, "clipping_norm": clipping_norm, "delta": 1e-5,
              "dialogues": dialogues, "threads": threads,
              "data": "SAMSum validation, the slice training holds out (first N); wearer dev suite (first M)",
              "baseline": baseline, "rows": rows, "goal_drop": GOAL_DROP, "smallest_cohort_within_goal": smallest}
    (out / "dp_utility.json").write_text(json.dumps(report, indent=2))
    plot(report, out / "dp_utility.png")
    return report


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    base = report["baseline"]["rouge_l"]
    for z in sorted({r["noise_multiplier"] for r in report["rows"]}):
        rows = sorted((r for r in report["rows"] if r["noise_multiplier"] == z), key=lambda r: r["clients"])
        ax.plot([r["clients"] for r in rows], [r["rouge_l"] for r in rows], marker="o", label=f"z = {z}")
        for r in rows:
            ax.annotate(f"ε {r['epsilon']:.1f}", (r["clients"], r["rouge_l"]), fontsize=7,
                        textcoords="offset points", xytext=(3, -10))
    ax.axhline(base, color="gray", linestyle="--", label="task adapter alone")
    ax.axhline(base - report["goal_drop"], color="gray", linestyle=":", label="1 ROUGE-L point below")
    ax.set_xscale("log")
    ax.set_xlabel("devices per round (m)")
    ax.set_ylabel("ROUGE-L (SAMSum validation, held out)")
    ax.set_title(f"Central DP noise after {report['rounds']} rounds, C = {report['clipping_norm']}, "
                 f"population {report['population']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tidings.bench.dp_utility", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[3, 10, 30, 100, 300, 1000],
                        help="devices per round to measure (default: %(default)s)")
    parser.add_argument("--noise-multiplier", type=float, nargs="+", default=[1.0], help="z (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=10, help="rounds the noise accumulates over (default: %(default)s)")
    parser.add_argument("--population", type=int, default=10_000, help="devices sampled from, for ε")
    parser.add_argument("--clipping-norm", type=float, default=1.0)
    parser.add_argument("--dialogues", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="wearer dev threads (default: none)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    report = run(args.clients, args.noise_multiplier, args.rounds, args.population, args.dialogues, args.threads,
                 args.clipping_norm, args.out)
    print(json.dumps({"smallest_cohort_within_goal": report["smallest_cohort_within_goal"],
                      "baseline_rouge_l": report["baseline"]["rouge_l"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
