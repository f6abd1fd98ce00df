"""What the ClientApp, the simulation and the device share: the model, local data, local training.

Local training reuses the adapter recipe's `train_lora` with few steps: the
federated LoRA (`adapter.py`) on a base with the task adapter merged in,
starting from the global adapter. It is bounded (at most `max_examples`
examples of at most `max_seq_tokens` tokens, `steps` optimizer steps) and
interruptible: `should_stop` is polled between steps, the checkpoint stays
in a directory named after the starting adapter's digest, and a later call
from the same starting adapter continues where it stopped; a new global
adapter makes the old checkpoint worthless, so it is removed.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import logging
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tidings.device.config import Config
from tidings.device.llm.prompts import FORMATS
from tidings.federated.adapter import AdapterLayout, AdapterSpec, Arrays
from tidings.models.registry import DEFAULT_MODEL, ModelFile, load_adapter_manifest, resolve_model
from tidings.models.training.data import Example

log = logging.getLogger("tidings")
TASK_ADAPTER = "tidings-task"
GEMMA = FORMATS["gemma"]


@dataclass(frozen=True)
class LocalTraining:
    steps: int = 2
    learning_rate: float = 2e-3
    batch_tokens: int = 1024
    max_seq_tokens: int = 384
    max_examples: int = 64
    seed: int = 0
    threads: int = 0
    bf16: bool = False


@dataclass(frozen=True)
class LocalResult:
    arrays: Arrays | None  # None: interrupted, the checkpoint is kept for the next call
    steps: int
    num_examples: int
    loss: float
    seconds: float


def embedded_model() -> ModelFile:
    return resolve_model(DEFAULT_MODEL, Config().model.cache_dir)


def hf_dir(model: ModelFile) -> Path:
    from tidings.models.training.hf_base import ensure_hf_base

    return ensure_hf_base(model, Config().model.cache_dir)


def layout_for(model: ModelFile, spec: AdapterSpec = AdapterSpec()) -> AdapterLayout:
    return AdapterLayout.from_hf_dir(spec, hf_dir(model))


def arrays_digest(arrays: Mapping[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(arrays[name], np.float32).tobytes())
    return digest.hexdigest()


def merge_lora(model, arrays: Mapping[str, np.ndarray], scaling: float) -> None:
    """W += scaling * B @ A for every adapted module: the adapter becomes part of the frozen base."""
    import torch

    modules = dict(model.named_modules())
    for name in arrays:
        if ".lora_A." not in name:
            continue
        path = name.split("base_model.model.", 1)[-1].rsplit(".lora_A.", 1)[0]
        a = torch.from_numpy(np.asarray(arrays[name], np.float32))
        b = torch.from_numpy(np.asarray(arrays[name.replace(".lora_A.", ".lora_B.")], np.float32))
        with torch.no_grad():
            modules[path].weight += scaling * (b @ a)


@functools.lru_cache(maxsize=1)
def _task_base(model: ModelFile):
    """The PyTorch base with the shipped task adapter merged in, loaded once per process (seconds, ~1 GB)."""
    import json

    from safetensors.numpy import load_file

    from tidings.models.training.hf_base import load_hf_base

    base = load_hf_base(model, Config().model.cache_dir)
    peft_dir = load_adapter_manifest()[TASK_ADAPTER].path.parent / "peft"
    config = json.loads((peft_dir / "adapter_config.json").read_text())
    merge_lora(base, load_file(peft_dir / "adapter_model.safetensors"), config["lora_alpha"] / config["r"])
    base.requires_grad_(False)
    return base


def training_base(model: ModelFile, below: Sequence[tuple[Arrays, AdapterSpec]] = ()):
    """A fresh copy of base + task adapter (+ `below`, e.g. the global adapter under a personal one)."""
    base = copy.deepcopy(_task_base(model))
    for arrays, spec in below:
        merge_lora(base, arrays, spec.alpha / spec.rank)
    return base


@functools.lru_cache(maxsize=1)
def tokenizer(model_path: str):
    from tidings.models.training.train import Tokenizer

    return Tokenizer(Path(model_path))


def train_local(model: ModelFile, spec: AdapterSpec, start: Arrays, examples: Sequence[Example],
                config: LocalTraining, work_dir: Path, *, should_stop: Callable[[], bool] = lambda: False,
                below: Sequence[tuple[Arrays, AdapterSpec]] = ()) -> LocalResult:
    """Fine-tune `start` on `examples` for `config.steps` steps; resumable (see the module docstring)."""
    import torch
    from peft import get_peft_model_state_dict

    from tidings.models.training.train import TrainConfig, tokenize_examples, train_lora

    started = time.perf_counter()
    tok = tokenizer(str(model.path))
    tokenized, _ = tokenize_examples(tok, list(examples)[: config.max_examples], GEMMA.end_of_turn,
                                     config.max_seq_tokens)
    if not tokenized:
        raise ValueError("no local training examples fit the token limit")
    run_dir = Path(work_dir) / f"from-{arrays_digest(start)[:16]}"
    if Path(work_dir).is_dir():
        for stale in Path(work_dir).glob("from-*"):
            if stale != run_dir:
                shutil.rmtree(stale, ignore_errors=True)
    train_config = TrainConfig(
        rank=spec.rank, alpha=spec.alpha, target_modules=spec.target_modules, learning_rate=config.learning_rate,
        warmup_steps=1, epochs=max(1.0, float(config.steps)), batch_tokens=config.batch_tokens,
        max_seq_tokens=config.max_seq_tokens, seed=config.seed, checkpoint_every=1, eval_every=10**9,
        max_steps=config.steps, threads=config.threads, bf16=config.bf16, frozen_a=spec.frozen_a)
    initial = {name: torch.from_numpy(np.asarray(value, np.float32).copy()) for name, value in start.items()}
    peft_model, state = train_lora(training_base(model, below), tokenized, [], train_config, run_dir,
                                   pad_id=tok.llm.token_eos(), should_stop=should_stop, initial_adapter=initial)
    losses = [h["loss"] for h in state.history]
    arrays = None
    if not _stopped_early(state, config, tokenized):
        arrays = {name: value.detach().float().numpy().copy()
                  for name, value in get_peft_model_state_dict(peft_model).items()}
        missing = set(start) - set(arrays)
        if missing:
            raise RuntimeError(f"trained adapter lacks {sorted(missing)[:3]}")
    return LocalResult(arrays, state.step, len(tokenized), float(np.mean(losses)) if losses else float("nan"),
                       time.perf_counter() - started)


def _stopped_early(state, config: LocalTraining, tokenized) -> bool:
    from tidings.models.training.train import batch_plan

    planned = len(batch_plan(tokenized, config.batch_tokens, max(1.0, float(config.steps)), config.seed))
    return state.step < min(config.steps, planned)


def store_examples(store_path: Path, limit: int) -> list[Example]:
    """The wearer's accepted and edited summaries and replies, as prompts built exactly as on the device."""
    from tidings.device.llm.prompts import render_dialogue, reply_prompt, summary_prompt
    from tidings.device.store import Store

    with Store(store_path) as store:
        rows = store.training_examples(limit)
    examples = []
    for row in rows:
        dialogue = render_dialogue(row.messages)
        prompt = summary_prompt(GEMMA, dialogue) if row.kind == "summary" else reply_prompt(GEMMA, dialogue,
                                                                                              row.author)
        examples.append(Example(f"store-{row.id}", row.kind, prompt, row.output))
    return examples
