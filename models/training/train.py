"""Train a LoRA adapter on the base model: the recipe behind the shipped task adapter.

The same `train_lora` runs centrally here and, with few steps, on each device
during federated rounds. On a CPU most of a causal LM's cost is the output
layer (262,144 rows for Gemma 3), so the loss is computed from the decoder's
hidden states at answer positions only: the prompt's logits are never formed.

Runs are deterministic for a seed, checkpoint atomically every few steps and
resume where they stopped (the batch plan is derived from the seed, so a
resumed run sees the same batches it would have).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import llama_cpp
import torch
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from tqdm import tqdm

from tidings.device.llm.vocab import ModelTokenizer, tokenize_prompt
from tidings.models.training.data import Example

log = logging.getLogger("tidings")

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class TrainConfig:
    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ALL_LINEAR
    learning_rate: float = 5e-4
    warmup_steps: int = 10
    epochs: float = 2.0
    # Padded tokens per optimizer step: batches are length-bucketed to waste little.
    batch_tokens: int = 4096
    # Padded tokens per forward pass: a step's batch is run in pieces of at most
    # this size and their gradients summed, so the step is the same and the peak
    # memory about halves (a 4,096-token pass with LoRA dropout needed 23 GB).
    micro_batch_tokens: int = 2048
    max_seq_tokens: int = 768
    seed: int = 0
    checkpoint_every: int = 20
    eval_every: int = 50
    max_steps: int | None = None
    threads: int = 0
    # bfloat16 autocast: about twice as fast as fp32 on CPUs with AVX512-BF16
    # or AMX; the LoRA weights and the optimizer stay in fp32.
    bf16: bool = True
    # FFA-LoRA (federated adapters): A stays where the initial adapter put it, only B trains.
    frozen_a: bool = False
    # Weight of the unlikelihood term on hard negatives' first wrong token (0: cross-entropy only).
    unlikelihood: float = 0.0


@dataclass
class TokenizedExample:
    id: str
    task: str
    ids: list[int]
    answer_start: int  # index of the first answer token in `ids`
    # (position, token): a hard negative's first token where it parts from the answer, at that position.
    wrong_tokens: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class TrainState:
    step: int = 0
    seconds: float = 0.0
    history: list[dict] = field(default_factory=list)


class Tokenizer:
    """llama.cpp's tokenizer for the base GGUF: the ids the device will use."""

    def __init__(self, gguf_path: Path) -> None:
        self.llm = llama_cpp.Llama(model_path=str(gguf_path), vocab_only=True, verbose=False)
        self.vocabulary = ModelTokenizer(self.llm)

    def example(self, example: Example, end_of_turn: str) -> TokenizedExample:
        prompt = tokenize_prompt(self.vocabulary, example.prompt)
        answer = self.vocabulary.tokenize(example.answer, special=False)
        answer += self.vocabulary.tokenize(end_of_turn, special=True)
        wrong = {}
        for negative in example.negatives:
            ids = self.vocabulary.tokenize(negative, special=False)
            parted = next((i for i, (a, b) in enumerate(zip(answer, ids)) if a != b), None)
            if parted is not None:
                wrong.setdefault(len(prompt) + parted, ids[parted])
        return TokenizedExample(example.id, example.task, prompt + answer, len(prompt), sorted(wrong.items()))


def tokenize_examples(tokenizer: Tokenizer, examples: Sequence[Example], end_of_turn: str,
                      max_tokens: int) -> tuple[list[TokenizedExample], int]:
    """Tokenized examples that fit `max_tokens`, and how many did not."""
    done = [tokenizer.example(e, end_of_turn) for e in examples]
    kept = [t for t in done if len(t.ids) <= max_tokens]
    return kept, len(done) - len(kept)


def batch_plan(examples: Sequence[TokenizedExample], batch_tokens: int, epochs: float, seed: int) -> list[list[int]]:
    """Indices per step: length-sorted buckets, shuffled per epoch; the same for the same seed."""
    rng = random.Random(seed)
    plan: list[list[int]] = []
    for _ in range(math.ceil(epochs)):
        order = sorted(range(len(examples)), key=lambda i: (len(examples[i].ids), rng.random()))
        batches: list[list[int]] = []
        current: list[int] = []
        for i in order:
            longest = max([len(examples[j].ids) for j in current] + [len(examples[i].ids)])
            if current and longest * (len(current) + 1) > batch_tokens:
                batches.append(current)
                current = []
            current.append(i)
        if current:
            batches.append(current)
        rng.shuffle(batches)
        plan += batches
    return plan[: round(len(plan) * epochs / math.ceil(epochs))]


def attach_lora(model: torch.nn.Module, config: TrainConfig) -> torch.nn.Module:
    lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                      target_modules=list(config.target_modules), bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def answer_loss(peft_model: torch.nn.Module, batch: Sequence[TokenizedExample], pad_id: int,
                bf16: bool = False, unlikelihood: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy over answer tokens, with logits formed only where they are scored.

    With `unlikelihood`, plus that weight times the mean of -log(1 - p(wrong token)) at each hard
    negative's first wrong token (Welleck et al. 2019's token-level unlikelihood): the prefix up to
    there is the reference's own, so those probabilities come from the same forward pass.
    """
    width = max(len(e.ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    rows, cols = [], []
    for b, example in enumerate(batch):
        ids[b, : len(example.ids)] = torch.tensor(example.ids)
        mask[b, : len(example.ids)] = 1
        for position in range(example.answer_start, len(example.ids)):
            rows.append(b)
            cols.append(position)
    causal_lm = peft_model.get_base_model()
    rows_t, cols_t = torch.tensor(rows), torch.tensor(cols)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        hidden = causal_lm.model(input_ids=ids, attention_mask=mask).last_hidden_state
        logits = causal_lm.lm_head(hidden[rows_t, cols_t - 1]).float()
    softcap = getattr(causal_lm.config, "final_logit_softcapping", None)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    loss = torch.nn.functional.cross_entropy(logits, ids[rows_t, cols_t])
    if not unlikelihood:
        return loss
    scored = {(b, c): i for i, (b, c) in enumerate(zip(rows, cols))}  # (example, position) -> logits row
    wrong = [(scored[(b, position)], token) for b, example in enumerate(batch)
             for position, token in example.wrong_tokens if (b, position) in scored]
    if wrong:
        at = torch.tensor([i for i, _ in wrong])
        p_wrong = torch.softmax(logits[at], dim=-1)[torch.arange(len(wrong)), torch.tensor([t for _, t in wrong])]
        loss = loss + unlikelihood * -torch.log1p(-p_wrong.clamp(max=1 - 1e-6)).mean()
    return loss


def answer_tokens(examples: Sequence[TokenizedExample]) -> int:
    return sum(len(e.ids) - e.answer_start for e in examples)


def micro_batches(batch: Sequence[TokenizedExample], max_tokens: int) -> list[list[TokenizedExample]]:
    """Consecutive pieces of `batch` of at most `max_tokens` padded tokens (one example may exceed it alone)."""
    pieces: list[list[TokenizedExample]] = [[]]
    for example in batch:
        piece = pieces[-1]
        if piece and (len(piece) + 1) * max(len(e.ids) for e in [*piece, example]) > max_tokens:
            pieces.append(piece := [])
        piece.append(example)
    return pieces


def accumulate_answer_loss(peft_model: torch.nn.Module, batch: Sequence[TokenizedExample], pad_id: int,
                           micro_batch_tokens: int, bf16: bool = False, unlikelihood: float = 0.0) -> float:
    """Backpropagate the batch's mean answer loss piece by piece; returns that loss."""
    answers = answer_tokens(batch)
    total = 0.0
    for piece in micro_batches(batch, micro_batch_tokens):
        share = answer_tokens(piece) / answers
        loss = answer_loss(peft_model, piece, pad_id, bf16, unlikelihood) * share
        loss.backward()
        total += loss.item()
    return total


@torch.no_grad()
def evaluate(peft_model: torch.nn.Module, examples: Sequence[TokenizedExample], pad_id: int,
             batch_tokens: int, bf16: bool = False) -> float:
    """Held-out answer loss, token-weighted."""
    peft_model.eval()
    total = tokens = 0.0
    for indices in batch_plan(examples, batch_tokens, 1, seed=0):
        batch = [examples[i] for i in indices]
        n = answer_tokens(batch)
        total += answer_loss(peft_model, batch, pad_id, bf16).item() * n
        tokens += n
    peft_model.train()
    return total / max(tokens, 1)


def _lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def _save_checkpoint(directory: Path, peft_model, optimizer, state: TrainState) -> None:
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save({"adapter": get_peft_model_state_dict(peft_model), "optimizer": optimizer.state_dict(),
                "state": asdict(state), "torch_rng": torch.get_rng_state()}, tmp / "checkpoint.pt")
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(tmp, directory)


def train_lora(
    base_model: torch.nn.Module,
    train: Sequence[TokenizedExample],
    held_out: Sequence[TokenizedExample],
    config: TrainConfig,
    out_dir: Path,
    *,
    pad_id: int,
    should_stop: Callable[[], bool] = lambda: False,
    initial_adapter: dict[str, torch.Tensor] | None = None,
) -> tuple[torch.nn.Module, TrainState]:
    """Train (or resume training) a LoRA on `base_model`; returns the PEFT model and its final state.

    `should_stop` is polled between steps: a busy device stops, keeps its
    checkpoint, and a later call with the same arguments continues.
    """
    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    peft_model = attach_lora(base_model, config)
    if initial_adapter is not None:
        set_peft_model_state_dict(peft_model, initial_adapter)
    if config.frozen_a:
        for name, parameter in peft_model.named_parameters():
            if ".lora_A." in name:
                parameter.requires_grad_(False)
    peft_model.train()
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=0.0)
    plan = batch_plan(train, config.batch_tokens, config.epochs, config.seed)
    total = min(len(plan), config.max_steps or len(plan))
    state = TrainState()
    checkpoint = out_dir / "checkpoint"
    if (checkpoint / "checkpoint.pt").exists():
        saved = torch.load(checkpoint / "checkpoint.pt", weights_only=False)
        set_peft_model_state_dict(peft_model, saved["adapter"])
        optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["torch_rng"])
        state = TrainState(**saved["state"])
        log.warning("resuming from step %d of %d", state.step, total)
    (out_dir / "train_config.json").write_text(json.dumps(asdict(config), indent=2))
    progress = tqdm(total=total, initial=state.step, desc="training LoRA", unit="step")
    while state.step < total and not should_stop():
        started = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = config.learning_rate * _lr_factor(state.step, total, config.warmup_steps)
        loss = accumulate_answer_loss(peft_model, [train[i] for i in plan[state.step]], pad_id,
                                      config.micro_batch_tokens, config.bf16, config.unlikelihood)
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        state.seconds += time.perf_counter() - started
        record = {"step": state.step, "loss": round(loss, 4), "lr": optimizer.param_groups[0]["lr"]}
        if held_out and (state.step % config.eval_every == 0 or state.step == total):
            record["held_out_loss"] = round(
                evaluate(peft_model, held_out, pad_id, config.batch_tokens, config.bf16), 4)
        state.history.append(record)
        progress.update(1)
        progress.set_postfix(loss=f"{loss:.3f}")
        if state.step % config.checkpoint_every == 0 or state.step == total:
            _save_checkpoint(checkpoint, peft_model, optimizer, state)
    if state.step % config.checkpoint_every and state.step < total:
        _save_checkpoint(checkpoint, peft_model, optimizer, state)  # stopped early: keep every step done
    progress.close()
    return peft_model, state
