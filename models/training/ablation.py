"""Which LoRA rank and target modules: a short, same-budget comparison on held-out loss.

Each candidate trains from scratch on the same batches (same seed, same data
as the recipe) for the same number of steps; then its answer-only loss on the
recipe's held-out examples, its seconds per step and its GGUF size are
recorded. Held-out loss after a fixed budget is the recipe's own validation
signal, and it is what ranks the candidates.

    python -m tidings.models.training.ablation --steps 40 --out models/adapters/tidings-task
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from tidings.device.config import Config
from tidings.device.llm.prompts import FORMATS
from tidings.models.registry import DEFAULT_MODEL, resolve_model
from tidings.models.training.data import build_examples, split_holdout, training_dialogues
from tidings.models.training.export import export_peft_model
from tidings.models.training.hf_base import load_hf_base
from tidings.models.training.data import HOLDOUT
from tidings.models.training.recipe import REPLY_SHARE
from tidings.models.training.train import ALL_LINEAR, Tokenizer, TrainConfig, evaluate, tokenize_examples, train_lora

CANDIDATES = {
    "r8 q,v": dict(rank=8, alpha=16.0, target_modules=("q_proj", "v_proj")),
    "r16 attention": dict(rank=16, alpha=32.0, target_modules=("q_proj", "k_proj", "v_proj", "o_proj")),
    "r8 all linear": dict(rank=8, alpha=16.0, target_modules=ALL_LINEAR),
    "r16 all linear (shipped)": dict(rank=16, alpha=32.0, target_modules=ALL_LINEAR),
}


def run(steps: int, held_out_limit: int, threads: int = 0) -> dict:
    cache = Config().model.cache_dir
    model = resolve_model(DEFAULT_MODEL, cache)
    fmt = FORMATS[model.spec.prompt_format]
    base_config = TrainConfig(max_steps=steps, warmup_steps=min(10, steps // 4), threads=threads)
    train_d, held_d = split_holdout(training_dialogues(), HOLDOUT, base_config.seed)
    tokenizer = Tokenizer(model.path)
    pad = tokenizer.llm.token_eos()
    train, _ = tokenize_examples(tokenizer, build_examples(fmt, train_d, reply_share=REPLY_SHARE, seed=0),
                                 fmt.end_of_turn, base_config.max_seq_tokens)
    held, _ = tokenize_examples(tokenizer, build_examples(fmt, held_d, reply_share=REPLY_SHARE, seed=1),
                                fmt.end_of_turn, base_config.max_seq_tokens)
    held = held[:held_out_limit]
    results = {}
    for name, fields in CANDIDATES.items():
        config = replace(base_config, **fields)
        with tempfile.TemporaryDirectory() as tmp:
            peft_model, state = train_lora(load_hf_base(model, cache), train, [], config, Path(tmp), pad_id=pad)
            size = export_peft_model(peft_model, Path(tmp) / "a.gguf").stat().st_size
        results[name] = {
            "rank": config.rank, "target_modules": list(config.target_modules),
            "held_out_loss": round(evaluate(peft_model, held, pad, config.batch_tokens, config.bf16), 4),
            "train_loss_last10": round(sum(h["loss"] for h in state.history[-10:]) / 10, 4),
            "seconds_per_step": round(state.seconds / state.step, 2), "gguf_bytes": size,
        }
        logging.getLogger("tidings").warning("%s: %s", name, results[name])
    return {"steps": steps, "held_out_examples": len(held), "seed": base_config.seed,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "candidates": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help="training steps per candidate (default: %(default)s)")
    parser.add_argument("--held-out", type=int, default=80, help="held-out examples scored (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=Path("models/adapters/tidings-task"))
    args = parser.parse_args(argv)
    report = run(args.steps, args.held_out, args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ablation.json").write_text(json.dumps(report, indent=2))
    print(f"{'candidate':<26} {'held-out loss':>13} {'s/step':>7} {'GGUF MB':>8}")
    for name, r in report["candidates"].items():
        print(f"{name:<26} {r['held_out_loss']:13.4f} {r['seconds_per_step']:7.1f} {r['gguf_bytes'] / 1e6:8.1f}")
    print(f"saved {args.out / 'ablation.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
