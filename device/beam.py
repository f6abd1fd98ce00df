"""Beam search in llama.cpp: several continuations of one prompt decoded side by side.

Greedy decoding commits to the likeliest next token even when it leads to a
worse summary overall; keeping the `beams` best partial summaries and finishing
the best-scoring one is the standard decoding for fine-tuned summarizers (BART's
SAMSum figures are beam search). Each hypothesis lives in its own sequence of a
multi-sequence KV cache: the prompt is evaluated once, and a hypothesis that
continues another copies its parent's cache entries (a bookkeeping operation in
a unified cache, no recomputation), so every step is one batched decode of
`beams` tokens.

The context here is separate from the engine's main one because
llama-cpp-python creates its context with a single sequence; it is created on
first use, carries the same adapters, and costs one more KV cache.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import llama_cpp
import numpy as np


@dataclass(frozen=True)
class BeamResult:
    tokens: list[int]
    text: str
    finish: str  # "stop" (an end-of-turn token or a stop sequence) or "length"
    steps: int  # batched decodes after the prompt


@dataclass
class _Hypothesis:
    tokens: list[int]
    logprob: float
    seq: int


def create_context(model, *, n_ctx: int, n_batch: int, threads: int, beams: int):
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = n_ctx
    params.n_batch = n_batch
    params.n_ubatch = n_batch
    params.n_threads = threads
    params.n_threads_batch = threads
    # Twice the beams: a step's new hypotheses take fresh sequences before the old ones are dropped.
    params.n_seq_max = 2 * beams
    params.kv_unified = True  # sequences share cache cells, so copying one is only bookkeeping
    params.swa_full = True
    params.no_perf = False
    ctx = llama_cpp.llama_init_from_model(model, params)
    if not ctx:
        raise RuntimeError("llama.cpp could not create a context for beam search")
    return ctx


def beam_search(ctx, vocab, prompt: Sequence[int], *, beams: int, max_tokens: int, n_batch: int,
                detokenize: Callable[[list[int]], str], stop: Sequence[str],
                length_penalty: float = 1.0) -> BeamResult:
    """The hypothesis with the best log-probability per token**length_penalty, as in Hugging Face's
    beam search with early stopping: done when `beams` hypotheses have finished."""
    memory = llama_cpp.llama_get_memory(ctx)
    llama_cpp.llama_memory_clear(memory, True)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    batch = llama_cpp.llama_batch_init(max(n_batch, 2 * beams), 0, 1)
    try:
        for start in range(0, len(prompt), n_batch):
            chunk = prompt[start:start + n_batch]
            _fill(batch, [(t, start + i, 0, start + i == len(prompt) - 1) for i, t in enumerate(chunk)])
            _decode(ctx, batch)
        rows = [-1]
        live = [_Hypothesis([], 0.0, 0)]
        finished: list[tuple[float, list[int], str, str]] = []
        steps = 0
        for _ in range(max_tokens):
            candidates = []
            for row, hyp in zip(rows, live):
                logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, row), shape=(n_vocab,))
                logprobs = logits - _logsumexp(logits)
                for token in np.argpartition(logprobs, -2 * beams)[-2 * beams:]:
                    candidates.append((hyp.logprob + float(logprobs[token]), hyp, int(token)))
            candidates.sort(key=lambda c: -c[0])
            survivors: list[tuple[_Hypothesis, int, float]] = []
            for logprob, parent, token in candidates:
                tokens = parent.tokens + [token]
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    text = detokenize(parent.tokens)
                    finished.append((logprob / len(tokens) ** length_penalty, parent.tokens, text, "stop"))
                else:
                    text = detokenize(tokens)
                    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
                    if cut >= 0:
                        finished.append((logprob / len(tokens) ** length_penalty, tokens, text[:cut], "stop"))
                    else:
                        survivors.append((parent, token, logprob))
                if len(survivors) == beams:
                    break
            if len(finished) >= beams or not survivors:
                break
            in_use = {h.seq for h in live}
            free = [s for s in range(2 * beams) if s not in in_use]
            entries = []
            next_live = []
            for (parent, token, logprob), seq in zip(survivors, free):
                llama_cpp.llama_memory_seq_cp(memory, parent.seq, seq, -1, -1)
                next_live.append(_Hypothesis(parent.tokens + [token], logprob, seq))
                entries.append((token, len(prompt) + len(parent.tokens), seq, True))
            for seq in in_use:
                llama_cpp.llama_memory_seq_rm(memory, seq, -1, -1)
            _fill(batch, entries)
            _decode(ctx, batch)
            steps += 1
            live = next_live
            rows = list(range(len(live)))
        if not finished:  # out of tokens: the live hypotheses compete as they are
            finished = [(h.logprob / max(1, len(h.tokens)) ** length_penalty, h.tokens, detokenize(h.tokens), "length")
                        for h in live]
        _, tokens, text, finish = max(finished, key=lambda f: f[0])
        return BeamResult(tokens, text, finish, steps)
    finally:
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_memory_clear(memory, True)


def _logsumexp(x: np.ndarray) -> float:
    top = float(x.max())
    return top + float(np.log(np.exp(x - top).sum()))


def _fill(batch, entries: list[tuple[int, int, int, bool]]) -> None:
    batch.n_tokens = len(entries)
    for i, (token, position, seq, logits) in enumerate(entries):
        batch.token[i] = token
        batch.pos[i] = position
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = logits


def _decode(ctx, batch) -> None:
    if llama_cpp.llama_decode(ctx, batch) != 0:
        raise RuntimeError("llama.cpp could not evaluate a beam-search batch")
