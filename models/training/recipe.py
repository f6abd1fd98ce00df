"""Reproduce the task adapter from scratch: the one command behind models/adapters/.

    python -m tidings.models.training.recipe --out models/adapters/tidings-task

Steps: assemble the embedded GGUF, convert it to PyTorch once (cached), build
summary and reply examples from the training splits (a fixed slice held out),
train the LoRA (checkpointed; rerun the command to resume), save the PEFT
adapter, export it to a GGUF adapter, and check llama.cpp against PyTorch on
held-out prompts. Writes `train_report.json` with everything the model card
quotes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import random
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors.torch import load_file

from tidings.device.config import Config, EngineConfig
from tidings.device.llm.engine import Engine
from tidings.device.llm.prompts import FORMATS
from tidings.models.registry import DEFAULT_MODEL, resolve_model, sha256_file
from tidings.models.training.data import DATA_DIR, HOLDOUT, Example, build_examples, split_holdout, training_dialogues
from tidings.models.training.export import export_peft_model
from tidings.models.training.hf_base import load_hf_base
from tidings.models.training.train import TokenizedExample, Tokenizer, TrainConfig, tokenize_examples, train_lora
from tidings.models.training.wearer_view import wearer_examples, with_negatives

log = logging.getLogger("tidings")
REPLY_SHARE = 0.5


@torch.no_grad()
def torch_greedy(peft_model: torch.nn.Module, ids: list[int], n: int, stop_ids: set[int]) -> list[int]:
    peft_model.eval()
    out: list[int] = []
    sequence = torch.tensor([ids])
    for _ in range(n):
        logits = peft_model(input_ids=sequence).logits[0, -1]
        token = int(logits.argmax())
        if token in stop_ids:
            break
        out.append(token)
        sequence = torch.cat([sequence, torch.tensor([[token]])], dim=1)
    return out


def llama_greedy(engine: Engine, ids: list[int], n: int, stop_ids: set[int]) -> list[int]:
    engine.reset_cache()
    out: list[int] = []
    for token in engine.llm.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0):
        if token in stop_ids or len(out) == n:
            break
        out.append(token)
    return out


def compare_runtimes(peft_model, gguf_model, adapter_path: Path, examples: list[TokenizedExample], n: int = 24) -> dict:
    """Greedy tokens from PyTorch (fp32, dequantized base) and llama.cpp (Q4_K_M base) with the same adapter."""
    with Engine(gguf_model, EngineConfig(n_ctx=1024)) as engine:
        engine.load_adapter(adapter_path, "task")
        engine.set_adapters({"task": 1.0})
        stop_ids = {engine.llm.token_eos(), *engine.llm.tokenize(b"<end_of_turn>", add_bos=False, special=True)}
        rows = []
        for example in examples:
            prompt = example.ids[: example.answer_start]
            ours = llama_greedy(engine, prompt, n, stop_ids)
            theirs = torch_greedy(peft_model, prompt, n, stop_ids)
            agree = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
            rows.append({"id": example.id, "identical": ours == theirs, "agreeing_prefix": agree,
                         "llama_cpp": engine.llm.detokenize(ours).decode(errors="replace"),
                         "pytorch": engine.llm.detokenize(theirs).decode(errors="replace")})
    return {"prompts": len(rows), "identical": sum(r["identical"] for r in rows), "rows": rows}


def examples_for(fmt, dialogues, seed: int, wearer_view: bool) -> list[Example]:
    """Summary and reply examples; with `wearer_view`, also SAMSum chats said to one of their senders, and
    every summary example with its hard negatives."""
    examples = build_examples(fmt, dialogues, reply_share=REPLY_SHARE, seed=seed)
    if not wearer_view:
        return examples
    examples = with_negatives(examples, dialogues) + wearer_examples(
        fmt, [d for d in dialogues if d.corpus == "samsum"], seed)
    random.Random(seed).shuffle(examples)
    return examples


def run(out: Path, config: TrainConfig, model_name: str, *, wearer_view: bool = False,
        init_adapter: Path | None = None) -> dict:
    started = time.perf_counter()
    cache = Config().model.cache_dir
    model = resolve_model(model_name, cache)
    fmt = FORMATS[model.spec.prompt_format if model.spec else "gemma"]
    dialogues = training_dialogues()
    train_d, held_d = split_holdout(dialogues, HOLDOUT, config.seed)
    tokenizer = Tokenizer(model.path)
    train, dropped = tokenize_examples(tokenizer, examples_for(fmt, train_d, config.seed, wearer_view),
                                       fmt.end_of_turn, config.max_seq_tokens)
    held, _ = tokenize_examples(tokenizer, examples_for(fmt, held_d, config.seed + 1, wearer_view),
                                fmt.end_of_turn, config.max_seq_tokens)
    log.warning("%d training examples (%d said to a wearer, %d with hard negatives; %d longer than %d tokens left "
                "out), %d held out", len(train), sum(e.task == "wearer-summary" for e in train),
                sum(bool(e.wrong_tokens) for e in train), dropped, config.max_seq_tokens, len(held))
    base = load_hf_base(model, cache)
    initial = load_file(str(init_adapter / "adapter_model.safetensors")) if init_adapter else None
    peft_model, state = train_lora(base, train, held, config, out, pad_id=tokenizer.llm.token_eos(),
                                   initial_adapter=initial)
    peft_dir = out / "peft"
    peft_model.save_pretrained(peft_dir)
    (peft_dir / "README.md").unlink(missing_ok=True)  # PEFT's blank template; the model card is ../README.md
    adapter = export_peft_model(peft_model, out / "adapter.gguf")
    check = compare_runtimes(peft_model, model, adapter, [e for e in held if e.task == "summary"][:5])
    report = {
        "base_model": {"name": model.name, "file": model.path.name, "sha256": model.spec.sha256 if model.spec else None},
        "adapter": {"file": adapter.name, "sha256": sha256_file(adapter), "bytes": adapter.stat().st_size},
        "config": dataclasses.asdict(config),
        "init_adapter": str(init_adapter) if init_adapter else None,
        "data": {"dir": str(DATA_DIR), "train_dialogues": len(train_d), "held_out_dialogues": len(held_d),
                 "train_examples": len(train), "held_out_examples": len(held), "dropped_too_long": dropped,
                 "wearer_examples": sum(e.task == "wearer-summary" for e in train),
                 "examples_with_negatives": sum(bool(e.wrong_tokens) for e in train),
                 "held_out_ids": sorted(d.id for d in held_d)},
        "steps": state.step,
        "train_seconds": round(state.seconds, 1),
        "wall_seconds_this_run": round(time.perf_counter() - started, 1),
        "history": state.history,
        "llama_cpp_vs_pytorch": check,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
    }
    (out / "train_report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("models/adapters/tidings-task"))
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--max-steps", type=int, help="stop after this many steps (for quick trials)")
    parser.add_argument("--epochs", type=float, default=TrainConfig.epochs)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--lora-dropout", type=float, default=TrainConfig.dropout,
                        help="dropout on the LoRA branch's input (regularizes against memorizing the small data)")
    parser.add_argument("--wearer-view", action="store_true",
                        help="also train on chats said to one of their senders (\"you\"), with hard negatives")
    parser.add_argument("--unlikelihood", type=float, default=TrainConfig.unlikelihood,
                        help="weight of the unlikelihood term on hard negatives (with --wearer-view)")
    parser.add_argument("--init-adapter", type=Path, metavar="PEFT_DIR",
                        help="start from this PEFT adapter (e.g. models/adapters/tidings-task/peft) instead of zero")
    parser.add_argument("--lr", type=float, default=TrainConfig.learning_rate, help="peak learning rate")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="tidings: %(message)s")
    config = TrainConfig(max_steps=args.max_steps, epochs=args.epochs, threads=args.threads,
                         dropout=args.lora_dropout, unlikelihood=args.unlikelihood, learning_rate=args.lr)
    report = run(args.out, config, args.model, wearer_view=args.wearer_view, init_adapter=args.init_adapter)
    check = report["llama_cpp_vs_pytorch"]
    print(f"trained {report['steps']} steps in {report['train_seconds'] / 60:.1f} min; "
          f"adapter {report['adapter']['bytes'] / 1e6:.1f} MB; llama.cpp vs PyTorch greedy identical on "
          f"{check['identical']}/{check['prompts']} held-out prompts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
