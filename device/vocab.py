"""Token ids for the engine's model: the full tokenizer's, mapped to a lean model's where it has one.

A lean model (models/trim.py) keeps a subset of the base vocabulary, and
llama.cpp's tokenizer over that subset segments rare words differently from
the full one: the model would read pieces it never saw in training. So a lean
engine tokenizes with the full vocabulary (a vocabulary-only load of the base
GGUF) and maps each id to the lean model's; a token the lean model lacks is
spelled with the lean model's own pieces (or bytes) of the same text. Where
every input token was kept, the lean model reads exactly what the full model
reads, and its logits over the kept tokens are the full model's.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from pathlib import Path

import gguf
import llama_cpp
import numpy as np
from tidings.device.prompts import Prompt


def tokenize_prompt(llm: llama_cpp.Llama, prompt: Prompt, *, bos: bool = True) -> list[int]:
    """BOS (where the model wants one), then control parts with special tokens, content parts without.

    Training tokenizes with this same function (on a vocabulary-only model),
    so an adapter learns exactly the token ids it will see on the device.
    SmolLM2's BOS is `<|im_start|>` and its metadata says not to add it: its
    prompts open with that token already.
    """
    tokens = [llm.token_bos()] if bos and llm._model.add_bos_token() else []
    for text, is_control in prompt.parts:
        tokens += llm.tokenize(text.encode("utf-8"), add_bos=False, special=is_control)
    return tokens


class ModelTokenizer:
    """The model's own tokenizer."""

    def __init__(self, llm: llama_cpp.Llama) -> None:
        self.llm = llm

    def prompt(self, prompt: Prompt) -> list[int]:
        return tokenize_prompt(self.llm, prompt)

    def text(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def prepare(self, prompt: Prompt) -> list[int]:
        """Ids for `Llama.create_completion`."""
        return self.prompt(prompt)

    def forget(self) -> None:
        pass


class LeanTokenizer:
    """The full vocabulary's tokenization, fed to a lean model.

    `prepare` makes the lean model read exactly what the full model reads: it
    evaluates the prompt from input embeddings read from the base file (the
    lean file lacks the rows of dropped tokens, since its embedding is tied to
    the output layer), leaving llama-cpp-python only the sampling. `map` is
    the plain alternative: ids only, a dropped token spelled with the lean
    model's pieces or bytes of its text.
    """

    def __init__(self, full_vocabulary: Path, kept_ids: np.ndarray, lean: llama_cpp.Llama, *, exact: bool = True) -> None:
        self.full = llama_cpp.Llama(model_path=str(full_vocabulary), vocab_only=True, verbose=False)
        if len(kept_ids) != lean.n_vocab():
            raise ValueError(f"the kept-id map has {len(kept_ids)} ids but the lean model {lean.n_vocab()} tokens")
        self.lean = lean
        self.to_lean = np.full(self.full.n_vocab(), -1, dtype=np.int64)
        self.to_lean[kept_ids] = np.arange(len(kept_ids))
        self._spelled: dict[int, list[int]] = {}
        self._embeddings = _BaseEmbeddings(full_vocabulary, self.full.n_vocab(), lean) if exact else None
        self._evaluated: list[int] = []  # the full ids whose positions we put into the lean context

    def prompt(self, prompt: Prompt) -> list[int]:
        return self.map(tokenize_prompt(self.full, prompt))

    def text(self, text: str) -> list[int]:
        return self.map(self.full.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def map(self, full_ids: Sequence[int]) -> list[int]:
        lean_ids: list[int] = []
        for token in full_ids:
            mapped = int(self.to_lean[token])
            lean_ids += [mapped] if mapped >= 0 else self._spell(token)
        return lean_ids

    def _spell(self, full_id: int) -> list[int]:
        """A dropped token as lean tokens of the same bytes."""
        if full_id not in self._spelled:
            piece = self.full.detokenize([full_id], special=True)
            ids = self.lean.tokenize(piece, add_bos=False, special=False)
            if self.lean.detokenize(ids, special=True) != piece:
                raise ValueError(f"token {full_id} ({piece!r}) cannot be spelled in the lean vocabulary")
            self._spelled[full_id] = ids
        return self._spelled[full_id]

    def prepare(self, prompt: Prompt) -> list[int]:
        """Ids for `Llama.create_completion`, already evaluated in the lean context (exact input)."""
        if self._embeddings is None:
            return self.prompt(prompt)
        full_ids = tokenize_prompt(self.full, prompt)
        reused = 0
        for a, b in zip(self._evaluated, full_ids[:-1]):  # at least the last token is evaluated again
            if a != b:
                break
            reused += 1
        llm = self.lean
        memory = llama_cpp.llama_get_memory(llm.ctx)
        if not llama_cpp.llama_memory_seq_rm(memory, -1, reused, -1):
            reused = 0
            llama_cpp.llama_memory_clear(memory, True)
        # The same batches as llama-cpp-python would make of the same ids: how a
        # prompt is split into batches changes llama.cpp's logits slightly.
        self._embeddings.decode(full_ids[reused:], first_position=reused, n_batch=llm.n_batch)
        # llama-cpp-python finds its context holding exactly the ids we return and samples
        # from the logits we left (llama-cpp-python 0.3.36, `Llama.generate`). A dropped
        # token's id there is a placeholder only ever compared with these same ids.
        lean_ids = [max(int(self.to_lean[t]), 0) for t in full_ids]
        llm.input_ids[:len(full_ids)] = lean_ids
        llm.n_tokens = len(full_ids)
        llm._requires_eval = False
        self._evaluated = full_ids
        return lean_ids

    def forget(self) -> None:
        """The lean context was cleared: nothing of ours is in it any more."""
        self._evaluated = []


class _BaseEmbeddings:
    """Input embeddings of the full vocabulary, read from the base GGUF (memory-mapped: rows are read on use)."""

    def __init__(self, base: Path, n_vocab: int, lean: llama_cpp.Llama) -> None:
        offset = int(lean.metadata["tidings.lean.base_token_embd_offset"])
        self.kind = gguf.GGMLQuantizationType(int(lean.metadata["tidings.lean.base_token_embd_type"]))
        self.n_embd = lean.n_embd()
        block, block_bytes = gguf.GGML_QUANT_SIZES[self.kind]
        self.rows = np.memmap(base, dtype=np.uint8, mode="r", offset=offset,
                              shape=(n_vocab, self.n_embd // block * block_bytes))
        # Gemma scales token embeddings by sqrt(n_embd) inside the graph, but
        # not embeddings given as input (llm_build_gemma3): scale them here.
        self.scale = np.float32(np.sqrt(self.n_embd)) if lean.metadata.get("general.architecture", "").startswith("gemma") else np.float32(1)
        self.ctx = lean.ctx

    def decode(self, full_ids: Sequence[int], *, first_position: int, n_batch: int) -> None:
        for start in range(0, len(full_ids), n_batch):
            chunk = full_ids[start:start + n_batch]
            vectors = gguf.quants.dequantize(np.asarray(self.rows[chunk]), self.kind).reshape(len(chunk), self.n_embd)
            vectors = np.ascontiguousarray(vectors * self.scale, dtype=np.float32)
            batch = llama_cpp.llama_batch_init(len(chunk), self.n_embd, 1)
            try:
                batch.n_tokens = len(chunk)
                ctypes.memmove(batch.embd, vectors.ctypes.data, vectors.nbytes)
                for i in range(len(chunk)):
                    batch.pos[i] = first_position + start + i
                    batch.n_seq_id[i] = 1
                    batch.seq_id[i][0] = 0
                    batch.logits[i] = start + i == len(full_ids) - 1
                if llama_cpp.llama_decode(self.ctx, batch) != 0:
                    raise RuntimeError("llama.cpp could not evaluate the prompt's embeddings")
            finally:
                llama_cpp.llama_batch_free(batch)
