"""Token ids for the engine's model: the full tokenizer's, mapped to a lean model's where it has one.

A lean model (models/trim.py) keeps a subset of the base vocabulary, and
llama.cpp's tokenizer over that subset segments rare words differently from
the full one: the model would read pieces it never saw in training. So a lean
engine tokenizes with the full vocabulary (`SpmTokenizer`: llama.cpp's
algorithm over flat arrays, a sixth of a second llama.cpp vocabulary's memory)
and maps each id to the lean model's; a token the lean model lacks is
spelled with the lean model's own pieces (or bytes) of the same text. Where
every input token was kept, the lean model reads exactly what the full model
reads, and its logits over the kept tokens are the full model's.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

import gguf
import llama_cpp
import numpy as np
from tidings.device.llm.beam import decode_batch, logits_at
from tidings.device.llm.prompts import Prompt
from tidings.models.spm import SpmTokenizer

FIXED_IDS = 494  # a lean model keeps the base's ids 0-493 (control, turn markers, bytes) verbatim
HIDDEN_SAMPLE = 1024  # kept output rows the hidden state is solved from
_WORD = re.compile(r"\w+")


class Vocabulary(Protocol):
    bos: int | None  # the token a prompt opens with, None where the model adds none

    def tokenize(self, text: str, *, special: bool) -> list[int]: ...


def tokenize_prompt(vocabulary: Vocabulary, prompt: Prompt) -> list[int]:
    """BOS (where the model wants one), then control parts with special tokens, content parts without.

    Training tokenizes with this same function, so an adapter learns exactly
    the token ids it will see on the device. SmolLM2's BOS is `<|im_start|>`
    and its metadata says not to add it: its prompts open with that token
    already.
    """
    tokens = [vocabulary.bos] if vocabulary.bos is not None else []
    for text, is_control in prompt.parts:
        tokens += vocabulary.tokenize(text, special=is_control)
    return tokens


class ModelTokenizer:
    """The model's own tokenizer."""

    def __init__(self, llm: llama_cpp.Llama) -> None:
        self.llm = llm
        self.bos = llm.token_bos() if llm._model.add_bos_token() else None

    def tokenize(self, text: str, *, special: bool) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=special)

    def prompt(self, prompt: Prompt) -> list[int]:
        return tokenize_prompt(self, prompt)

    def text(self, text: str) -> list[int]:
        return self.tokenize(text, special=False)

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

    def __init__(self, full_tokenizer: SpmTokenizer, base: Path, kept_ids: np.ndarray, lean: llama_cpp.Llama, *,
                 exact: bool = True) -> None:
        self.full = full_tokenizer
        if len(kept_ids) != lean.n_vocab():
            raise ValueError(f"the kept-id map has {len(kept_ids)} ids but the lean model {lean.n_vocab()} tokens")
        self.lean = lean
        self._lean_vocab = llama_cpp.llama_model_get_vocab(lean.model)
        self.kept_ids = kept_ids
        self.to_lean = np.full(self.full.n_vocab, -1, dtype=np.int64)
        self.to_lean[kept_ids] = np.arange(len(kept_ids))
        self._spelled: dict[int, list[int]] = {}
        self._words: dict[str, list[int]] = {}
        self._embeddings = _BaseEmbeddings(base, self.full.n_vocab, lean, kept_ids) if exact else None
        self._evaluated: list[int] = []  # the full ids whose positions we put into the lean context

    def prompt(self, prompt: Prompt) -> list[int]:
        return self.map(tokenize_prompt(self.full, prompt))

    def text(self, text: str) -> list[int]:
        return self.map(self.full.tokenize(text, special=False))

    def map(self, full_ids: Sequence[int]) -> list[int]:
        lean_ids: list[int] = []
        for token in full_ids:
            mapped = int(self.to_lean[token])
            lean_ids += [mapped] if mapped >= 0 else self._spell(token)
        return lean_ids

    def _word_tokens(self, word: str) -> list[int]:
        """The word as written, capitalized, lower or upper case, spaced or not, where that is one token."""
        if word not in self._words:
            found = set()
            for form in {word, word.capitalize(), word.lower(), word.upper()}:
                for text in (form, " " + form):
                    ids = self.full.tokenize(text, special=False)
                    if len(ids) == 1:
                        found.add(ids[0])
            self._words[word] = sorted(found)
        return self._words[word]

    def _twin(self, full_id: int) -> list[int]:
        """A token with or without its leading space, if that is a token too: the first piece of a
        name split in two at the start of a chat line returns spaced mid-sentence."""
        piece = self.full.piece(full_id, special=False).decode("utf-8", errors="ignore")
        return self._word_tokens(piece.strip()) if piece.strip() else []

    def _spell(self, full_id: int) -> list[int]:
        """A dropped token as lean tokens of the same bytes."""
        if full_id not in self._spelled:
            piece = self.full.piece(full_id, special=True)
            ids = self.lean.tokenize(piece, add_bos=False, special=False)
            if self.lean.detokenize(ids, special=True) != piece:
                raise ValueError(f"token {full_id} ({piece!r}) cannot be spelled in the lean vocabulary")
            self._spelled[full_id] = ids
        return self._spelled[full_id]

    @property
    def exact(self) -> bool:
        return self._embeddings is not None

    def full_ids(self, prompt: Prompt) -> list[int]:
        return tokenize_prompt(self.full, prompt)

    def prepare(self, prompt: Prompt) -> list[int]:
        """Ids for `Llama.create_completion`, already evaluated in the lean context (exact input)."""
        if self._embeddings is None:
            return self.prompt(prompt)
        full_ids = self._prefill(prompt)
        # llama-cpp-python finds its context holding exactly the ids we return and samples
        # from the logits we left (llama-cpp-python 0.3.36, `Llama.generate`). A dropped
        # token's id there is a placeholder only ever compared with these same ids.
        lean_ids = [max(int(self.to_lean[t]), 0) for t in full_ids]
        self.lean.input_ids[:len(full_ids)] = lean_ids
        self.lean.n_tokens = len(full_ids)
        self.lean._requires_eval = False
        self._evaluated = full_ids[:]
        return lean_ids

    def _prefill(self, prompt: Prompt) -> list[int]:
        """Evaluate the prompt from its full-vocabulary embeddings, reusing the cached prefix; its full ids."""
        full_ids = tokenize_prompt(self.full, prompt)
        reused = 0
        for a, b in zip(self._evaluated, full_ids[:-1]):  # at least the last token is evaluated again
            if a != b:
                break
            reused += 1
        memory = llama_cpp.llama_get_memory(self.lean.ctx)
        if not llama_cpp.llama_memory_seq_rm(memory, -1, reused, -1):
            reused = 0
            llama_cpp.llama_memory_clear(memory, True)
        # The same batches as llama-cpp-python would make of the same ids: how a
        # prompt is split into batches changes llama.cpp's logits slightly.
        self._embeddings.decode(full_ids[reused:], first_position=reused, n_batch=self.lean.n_batch)
        self._evaluated = full_ids[:]
        return full_ids

    def generate(self, prompt: Prompt, *, max_tokens: int, stop: Sequence[str], temperature: float,
                 rng: np.random.Generator) -> Iterator[dict]:
        """Chunks shaped like `Llama.create_completion(stream=True)`'s, generated over kept and copied tokens.

        Besides its kept tokens the model may emit any token of the prompt it
        lacks, or any word or piece of the prompt in its usual spellings (a
        rare name, a word to quote back): its logit is the full
        model's, the output layer being the input embedding, and it is read
        back from its embedding like every other token.
        """
        candidates = LeanCandidates(self, prompt, self._prefill(prompt))
        text = b""
        sent = 0
        finish = "length"
        for _ in range(max_tokens):
            choice = _pick(candidates.logits(self.lean.ctx, -1), temperature, rng)
            full_id = candidates.full_id(choice)
            if candidates.is_end(choice):
                finish = "stop"
                break
            text += self.full.piece(full_id, special=False)
            decoded = text.decode("utf-8", errors="ignore")  # a split multi-byte character waits for its rest
            cut = min((i for i in (decoded.find(s) for s in stop) if i >= 0), default=-1)
            if cut >= 0:
                if cut > sent:
                    yield _chunk(decoded[sent:cut], None)
                finish = "stop"
                break
            # Hold back what could still become a stop sequence.
            safe = len(decoded) - max((_overlap(decoded, s) for s in stop), default=0)
            if safe > sent:
                yield _chunk(decoded[sent:safe], None)
                sent = safe
            if choice < candidates.n_vocab:
                decode_batch(self.lean.ctx, [(len(self._evaluated), 0, True)], tokens=[choice])
            else:
                self._embeddings.decode([full_id], first_position=len(self._evaluated), n_batch=1)
            self._evaluated.append(full_id)
        else:
            decoded = text.decode("utf-8", errors="ignore")
            if len(decoded) > sent:
                yield _chunk(decoded[sent:], None)
        yield _chunk("", finish)

    def _copyable(self, prompt: Prompt, full_ids: list[int]) -> tuple[np.ndarray, Callable]:
        """The prompt's tokens the lean model lacks, and a function from its logits to theirs."""
        # A name opens a chat line without a space ("Martina: ...", often in pieces there) and
        # returns mid-sentence with one; "bbq" comes back as "BBQ": every word and piece of the
        # prompt is a candidate in its usual spellings.
        words = set(_WORD.findall(prompt.text))
        said = set(full_ids).union(*(self._word_tokens(w) for w in words), *(self._twin(t) for t in set(full_ids)))
        copyable = np.array(sorted(t for t in said if self.to_lean[t] < 0), dtype=np.int64)
        return copyable, self._embeddings.logit_map(copyable)

    def beam_model(self, prompt: Prompt) -> LeanCandidates:
        """This prompt's side of a beam search (device/llm/beam.py), over kept and copyable tokens."""
        if self._embeddings is None:
            raise ValueError("a lean model with spelled input beam-searches over its own token ids")
        return LeanCandidates(self, prompt, tokenize_prompt(self.full, prompt))

    def forget(self) -> None:
        """The lean context was cleared: nothing of ours is in it any more."""
        self._evaluated = []


class LeanCandidates:
    """What a lean model may emit after one prompt: its kept tokens, then the prompt's copyable ones.

    The generation loop picks among them; as a `BeamModel` (device/llm/beam.py) they are the lean
    model's side of a beam search, fed back from their embedding rows like the prompt (one batch
    may not mix ids and embeddings).
    """

    def __init__(self, tokenizer: LeanTokenizer, prompt: Prompt, full_ids: list[int]) -> None:
        self.tokenizer = tokenizer
        self.embeddings = tokenizer._embeddings
        self.full_ids = full_ids
        self.copyable, self.copy_logits = tokenizer._copyable(prompt, full_ids)
        self.n_vocab = tokenizer.lean.n_vocab()

    def prefill(self, ctx) -> int:
        self.embeddings.decode(self.full_ids, first_position=0, n_batch=self.tokenizer.lean.n_batch, ctx=ctx)
        return len(self.full_ids)

    def logits(self, ctx, row: int) -> np.ndarray:
        lean = logits_at(ctx, row, self.n_vocab)
        return np.concatenate([lean, self.copy_logits(lean)]) if len(self.copyable) else lean

    def full_id(self, candidate: int) -> int:
        if candidate < self.n_vocab:
            return int(self.tokenizer.kept_ids[candidate])
        return int(self.copyable[candidate - self.n_vocab])

    def feed(self, ctx, entries: list[tuple[int, int, int]]) -> None:
        self.embeddings.decode_at(ctx, [(self.full_id(c), position, seq, True) for c, position, seq in entries])

    def is_end(self, candidate: int) -> bool:
        return candidate < self.n_vocab and llama_cpp.llama_vocab_is_eog(self.tokenizer._lean_vocab, candidate)

    def text(self, candidates: list[int]) -> str:
        pieces = b"".join(self.tokenizer.full.piece(self.full_id(c), special=False) for c in candidates)
        return pieces.decode("utf-8", errors="ignore")


class _BaseEmbeddings:
    """Input embeddings of the full vocabulary, read from the base GGUF row by row as needed.

    Read with pread, not memory-mapped: a mapped read pulls its neighbouring
    pages into the process too (fault-around), and a thousand scattered rows
    mapped that way cost 120 MB of resident memory.
    """

    def __init__(self, base: Path, n_vocab: int, lean: llama_cpp.Llama, kept_ids: np.ndarray) -> None:
        offset = int(lean.metadata["tidings.lean.base_token_embd_offset"])
        self.kind = gguf.GGMLQuantizationType(int(lean.metadata["tidings.lean.base_token_embd_type"]))
        self.n_embd = lean.n_embd()
        block, block_bytes = gguf.GGML_QUANT_SIZES[self.kind]
        self._file = base.open("rb")
        self._offset = offset
        self._row_bytes = self.n_embd // block * block_bytes
        self._n_vocab = n_vocab
        # Gemma scales token embeddings by sqrt(n_embd) inside the graph, but
        # not embeddings given as input (llm_build_gemma3): scale them here.
        self.scale = np.float32(np.sqrt(self.n_embd)) if lean.metadata.get("general.architecture", "").startswith("gemma") else np.float32(1)
        self.ctx = lean.ctx
        # The output layer is the embedding (tied), so the final hidden state h
        # satisfies logits = E_kept @ h: solved once by least squares on a
        # well-spread sample of kept rows, it gives any dropped token's logit as
        # E[token] @ h (agrees with the full model's to about 1e-5).
        sample = np.arange(FIXED_IDS, len(kept_ids), max(1, (len(kept_ids) - FIXED_IDS) // HIDDEN_SAMPLE))[:HIDDEN_SAMPLE]
        rows = self.output_rows(kept_ids[sample]).astype(np.float64)
        self._solve = np.linalg.solve(rows.T @ rows, rows.T)
        self._sample = sample

    def output_rows(self, full_ids: np.ndarray) -> np.ndarray:
        if len(full_ids) == 0:
            return np.zeros((0, self.n_embd), dtype=np.float32)
        if np.any((full_ids < 0) | (full_ids >= self._n_vocab)):
            raise IndexError(f"token ids outside the {self._n_vocab}-token vocabulary")
        fd, size = self._file.fileno(), self._row_bytes
        raw = b"".join(os.pread(fd, size, self._offset + int(i) * size) for i in full_ids)
        rows = np.frombuffer(raw, dtype=np.uint8).reshape(len(full_ids), size)
        return gguf.quants.dequantize(rows, self.kind).reshape(len(full_ids), self.n_embd)

    def logit_map(self, full_ids: np.ndarray):
        """A function from the lean logits to the logits of `full_ids`.

        np.einsum rather than `@`: a multi-threaded BLAS call would leave its
        threads spinning on the cores llama.cpp is about to decode on (measured:
        10x slower decoding on two cores).
        """
        to_logits = np.einsum("ij,jk->ik", self.output_rows(full_ids).astype(np.float64), self._solve)
        return lambda lean_logits: np.einsum("ij,j->i", to_logits, lean_logits[self._sample].astype(np.float64))

    def decode(self, full_ids: Sequence[int], *, first_position: int, n_batch: int, ctx=None) -> None:
        """Evaluate `full_ids` as sequence 0 of `ctx` (the lean context by default), logits at the last."""
        for start in range(0, len(full_ids), n_batch):
            chunk = full_ids[start:start + n_batch]
            self.decode_at(ctx or self.ctx, [(t, first_position + start + i, 0, start + i == len(full_ids) - 1)
                                             for i, t in enumerate(chunk)])

    def decode_at(self, ctx, entries: Sequence[tuple[int, int, int, bool]]) -> None:
        """Evaluate (full id, position, sequence, wants logits) entries from their embeddings, in one batch."""
        rows = self.output_rows(np.asarray([e[0] for e in entries])) * self.scale
        decode_batch(ctx, [e[1:] for e in entries], embeddings=rows)


def _pick(logits: np.ndarray, temperature: float, rng: np.random.Generator, top_k: int = 40) -> int:
    if temperature == 0:
        return int(np.argmax(logits))
    top = np.argpartition(logits, -top_k)[-top_k:]
    weights = np.exp((logits[top] - logits[top].max()) / temperature)
    return int(rng.choice(top, p=weights / weights.sum()))


def _overlap(text: str, stop: str) -> int:
    """Length of the longest end of `text` that starts `stop`."""
    for n in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0


def _chunk(text: str, finish: str | None) -> dict:
    return {"choices": [{"text": text, "finish_reason": finish}]}
