"""Beam search in llama.cpp: several continuations of one prompt decoded side by side.

Greedy decoding commits to the likeliest next token even when it leads to a
worse summary overall; keeping the `beams` best partial summaries and finishing
the best-scoring one is the standard decoding for fine-tuned summarizers (BART's
SAMSum figures are beam search). Each hypothesis lives in its own sequence of a
multi-sequence KV cache: the prompt is evaluated once, and a hypothesis that
continues another copies its parent's cache entries (a bookkeeping operation in
a unified cache, no recomputation), so every step is one batched decode of
`beams` tokens.

The engine's context has the sequences for it (`[engine] max_beams`):
llama-cpp-python makes a one-sequence context, which the engine remakes with
more (device/llm/engine.py).

The search itself knows nothing of vocabularies: a `BeamModel` evaluates the
prompt, gives each step's logits over its candidates and feeds chosen ones
back. `TokenModel` is a full-vocabulary model's; a lean model's, which can also
copy tokens of the prompt it lacks, is `LeanCandidates` in device/llm/vocab.py.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import llama_cpp
import numpy as np


@dataclass(frozen=True)
class BeamResult:
    candidates: list[int]
    text: str
    finish: str  # "stop" (an end-of-turn token or a stop sequence) or "length"
    # The other finished hypotheses' distinct texts, best first: a caller that must turn the best
    # down (a summary failing its checks) has the search's next choices without decoding again.
    runners_up: tuple[str, ...] = ()


class BeamModel(Protocol):
    """A model's side of a beam search, in its own candidate ids."""

    def prefill(self, ctx) -> int:
        """Evaluate the prompt as sequence 0 with logits at its end; its length."""
        ...

    def logits(self, ctx, row: int) -> np.ndarray:
        """The next candidate's logits after the batch entry `row` (-1: the last)."""
        ...

    def feed(self, ctx, entries: list[tuple[int, int, int]]) -> None:
        """Evaluate (candidate, position, sequence) entries in one batch, logits for each."""
        ...

    def is_end(self, candidate: int) -> bool: ...

    def text(self, candidates: list[int]) -> str: ...


class TokenModel:
    """A model whose candidates are its own token ids."""

    def __init__(self, model, prompt: Sequence[int], n_batch: int, detokenize: Callable[[list[int]], str]) -> None:
        self.vocab = llama_cpp.llama_model_get_vocab(model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.prompt = list(prompt)
        self.n_batch = n_batch
        self._detokenize = detokenize

    def prefill(self, ctx) -> int:
        last = len(self.prompt) - 1
        for start in range(0, len(self.prompt), self.n_batch):
            chunk = self.prompt[start:start + self.n_batch]
            decode_batch(ctx, [(start + i, 0, start + i == last) for i in range(len(chunk))], tokens=chunk)
        return len(self.prompt)

    def logits(self, ctx, row: int) -> np.ndarray:
        return logits_at(ctx, row, self.n_vocab)

    def feed(self, ctx, entries: list[tuple[int, int, int]]) -> None:
        decode_batch(ctx, [(position, seq, True) for _, position, seq in entries], tokens=[t for t, _, _ in entries])

    def is_end(self, candidate: int) -> bool:
        return llama_cpp.llama_vocab_is_eog(self.vocab, candidate)

    def text(self, candidates: list[int]) -> str:
        return self._detokenize(candidates)


@dataclass
class _Hypothesis:
    candidates: list[int]
    logprob: float
    seq: int


def beam_search(ctx, model: BeamModel, *, beams: int, max_tokens: int, stop: Sequence[str],
                length_penalty: float = 1.0) -> BeamResult:
    """The hypothesis with the best log-probability / length**length_penalty, as in Hugging Face's
    beam search with early stopping: done when `beams` hypotheses have finished."""
    memory = llama_cpp.llama_get_memory(ctx)
    llama_cpp.llama_memory_clear(memory, True)
    try:
        n_prompt = model.prefill(ctx)
        rows = [-1]
        live = [_Hypothesis([], 0.0, 0)]
        finished: list[tuple[float, list[int], str, str]] = []
        for _ in range(max_tokens):
            scored = []
            for row, hyp in zip(rows, live):
                logits = model.logits(ctx, row)
                logprobs = logits - _logsumexp(logits)
                for candidate in np.argpartition(logprobs, -2 * beams)[-2 * beams:]:
                    scored.append((hyp.logprob + float(logprobs[candidate]), hyp, int(candidate)))
            scored.sort(key=lambda c: -c[0])
            survivors: list[tuple[_Hypothesis, int, float]] = []
            for rank, (logprob, parent, candidate) in enumerate(scored):
                candidates = parent.candidates + [candidate]
                if model.is_end(candidate):
                    ending = (parent.candidates, model.text(parent.candidates))
                else:
                    text = model.text(candidates)
                    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
                    ending = (candidates, text[:cut]) if cut >= 0 else None
                if ending is None:
                    survivors.append((parent, candidate, logprob))
                elif rank < beams:  # only the best `beams` candidates may finish (Hugging Face's rule)
                    finished.append((logprob / len(candidates) ** length_penalty, *ending, "stop"))
                if len(survivors) == beams:
                    break
            if len(finished) >= beams or not survivors:
                break
            in_use = {h.seq for h in live}
            free = [s for s in range(2 * beams) if s not in in_use]
            entries = []
            next_live = []
            for (parent, candidate, logprob), seq in zip(survivors, free):
                llama_cpp.llama_memory_seq_cp(memory, parent.seq, seq, -1, -1)
                next_live.append(_Hypothesis(parent.candidates + [candidate], logprob, seq))
                entries.append((candidate, n_prompt + len(parent.candidates), seq))
            for seq in in_use:
                llama_cpp.llama_memory_seq_rm(memory, seq, -1, -1)
            model.feed(ctx, entries)
            live = next_live
            rows = list(range(len(live)))
        if not finished:  # out of tokens: the live hypotheses compete as they are
            finished = [(h.logprob / max(1, len(h.candidates)) ** length_penalty, h.candidates,
                         model.text(h.candidates), "length") for h in live]
        ranked = sorted(finished, key=lambda f: -f[0])
        _, candidates, text, finish = ranked[0]
        runners_up = dict.fromkeys(t for _, _, t, _ in ranked[1:] if t.strip() and t != text)
        return BeamResult(candidates, text, finish, tuple(runners_up))
    finally:
        llama_cpp.llama_memory_clear(memory, True)


def _logsumexp(x: np.ndarray) -> float:
    top = float(x.max())
    return top + float(np.log(np.exp(x - top).sum()))


def logits_at(ctx, row: int, n_vocab: int) -> np.ndarray:
    """The logits llama.cpp computed for batch entry `row` (-1: the last), as a view of its buffer."""
    return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, row), shape=(n_vocab,))


def decode_batch(ctx, entries: Sequence[tuple[int, int, bool]], *, tokens: Sequence[int] | None = None,
                 embeddings: np.ndarray | None = None) -> None:
    """One llama_decode of (position, sequence, wants logits) entries, read as token ids or as embedding rows."""
    batch = llama_cpp.llama_batch_init(len(entries), 0 if embeddings is None else embeddings.shape[1], 1)
    try:
        batch.n_tokens = len(entries)
        if embeddings is None:
            for i, token in enumerate(tokens):
                batch.token[i] = token
        else:
            vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
            ctypes.memmove(batch.embd, vectors.ctypes.data, vectors.nbytes)
        for i, (position, seq, logits) in enumerate(entries):
            batch.pos[i] = position
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = logits
        if llama_cpp.llama_decode(ctx, batch) != 0:
            raise RuntimeError(f"llama.cpp could not evaluate a batch of {len(entries)} tokens")
    finally:
        llama_cpp.llama_batch_free(batch)
