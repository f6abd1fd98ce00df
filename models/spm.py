"""The merge loop of llama.cpp's SentencePiece (SPM) tokenizer, in Python.

Choosing a smaller vocabulary needs to know which pieces the tokenizer builds
on its way to a token: llama.cpp only queues a merge whose result is itself in
the vocabulary, so a kept token whose intermediate pieces were dropped can
never be produced again. `merge_path` replays llama.cpp's loop
(`llm_tokenizer_spm_session`: characters as symbols, the highest-scoring
adjacent pair merged first, ties to the leftmost) and returns every piece it
creates. `SpmTokenizer` is the whole tokenizer around that loop, for a lean
engine that must tokenize with the full vocabulary without holding a second
llama.cpp vocabulary.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tidings.device.tables import StringTable


def merge_path(text: str, score: Callable[[str], float | None]) -> tuple[list[str], list[str]]:
    """(pieces created by merges in order, final symbols) for `text`; `score` is a piece's score, None if no token.

    `text` is in the vocabulary's own spelling (spaces as "▁"). A final symbol
    that is not in the vocabulary becomes byte tokens in llama.cpp.
    """
    starts = list(range(len(text)))
    lengths = [1] * len(text)
    prev = [i - 1 for i in range(len(text))]
    nxt = [i + 1 if i + 1 < len(text) else -1 for i in range(len(text))]
    queue: list[tuple[float, int, int, int]] = []

    def try_pair(left: int, right: int) -> None:
        if left < 0 or right < 0:
            return
        piece = text[starts[left]:starts[left] + lengths[left] + lengths[right]]
        found = score(piece)
        if found is not None:
            heapq.heappush(queue, (-found, left, right, len(piece)))

    for i in range(1, len(text)):
        try_pair(i - 1, i)
    created: list[str] = []
    while queue:
        _, left, right, size = heapq.heappop(queue)
        if lengths[left] == 0 or lengths[right] == 0 or lengths[left] + lengths[right] != size:
            continue  # a stale pair: one side was merged into something else since
        lengths[left] += lengths[right]
        lengths[right] = 0
        nxt[left] = nxt[right]
        if nxt[right] >= 0:
            prev[nxt[right]] = left
        created.append(text[starts[left]:starts[left] + lengths[left]])
        try_pair(prev[left], left)
        try_pair(left, nxt[left])
    final, i = [], 0 if text else -1
    while i >= 0:
        final.append(text[starts[i]:starts[i] + lengths[i]])
        i = nxt[i]
    return created, final


# llama.cpp's token attributes (`llama_token_attr`): what it makes of a token's
# GGUF type, plus its own overrides (it turns "</s>" into a control token).
UNKNOWN, NORMAL, CONTROL, USER_DEFINED, BYTE, LSTRIP, RSTRIP = 1 << 0, 1 << 2, 1 << 3, 1 << 4, 1 << 5, 1 << 7, 1 << 8
_SPECIAL = UNKNOWN | CONTROL
_ESCAPED_SPACE = "\u2581"


class SpmTokenizer:
    """llama.cpp's SPM tokenizer over a vocabulary kept in a few flat arrays.

    A lean engine tokenizes with the full 262k-token vocabulary. A
    vocabulary-only llama.cpp load holds it in about 45 MB of strings and hash
    maps; these arrays take about 8 MB. The algorithm is llama.cpp's
    (`llama_vocab::impl::tokenize` for SPM): special and user-defined tokens
    split out first, longest first; then each plain fragment, spaces written
    "▁", goes through the merge loop, and a final symbol that is no token
    becomes byte tokens. The tests hold it to llama.cpp's output.
    """

    def __init__(self, tables: dict[str, np.ndarray]) -> None:
        self._pieces = StringTable(tables, "pieces")
        self.scores = tables["scores"]
        self.attrs = tables["attrs"]
        if np.any(self.attrs & (LSTRIP | RSTRIP)):
            raise ValueError("this vocabulary has tokens that strip spaces around them: SpmTokenizer does not")
        self.n_vocab = len(self.scores)
        bos, add_bos, add_space_prefix = (int(v) for v in tables["flags"])
        self.bos = bos if add_bos else None
        self._space_prefix = bool(add_space_prefix)
        self._bytes = [self.find(f"<0x{b:02X}>".encode()) for b in range(256)]
        specials = sorted(np.flatnonzero(self.attrs & (_SPECIAL | USER_DEFINED)), key=lambda i: -len(self.text(i)))
        self._specials = [(self.text(int(i)).decode("utf-8", errors="replace"), int(i)) for i in specials]
        self._user_defined = [(text, i) for text, i in self._specials if not self.attrs[i] & _SPECIAL]

    @classmethod
    def load(cls, path: Path) -> SpmTokenizer:
        with np.load(path) as f:
            return cls({key: f[key] for key in f.files})

    # -- the vocabulary ---------------------------------------------------

    def text(self, token_id: int) -> bytes:
        """The token as the vocabulary spells it ("▁" for a space)."""
        return self._pieces[token_id]

    def find(self, text: bytes) -> int:
        """The id of the token spelled `text`, or -1; the last one if several are (llama.cpp's map keeps the last)."""
        return self._pieces.find(text)

    def piece(self, token_id: int, *, special: bool) -> bytes:
        """What the token reads as (llama.cpp's `token_to_piece`, no stripping)."""
        attr = self.attrs[token_id]
        if attr & _SPECIAL and not special:
            return b""
        if attr & (_SPECIAL | USER_DEFINED):
            return self.text(token_id)
        if attr & NORMAL:
            return self.text(token_id).replace(_ESCAPED_SPACE.encode(), b" ")
        if attr & BYTE:
            return bytes([int(self.text(token_id)[3:5], 16)])
        return b""

    def _score(self, piece: str) -> float | None:
        token_id = self.find(piece.encode("utf-8"))
        return None if token_id < 0 else float(self.scores[token_id])

    # -- tokenizing -------------------------------------------------------

    def tokenize(self, text: str, *, special: bool) -> list[int]:
        """Token ids of `text` (no BOS); `special` also reads control tokens written in the text."""
        fragments: list[str | int] = [text] if text else []
        for token_text, token_id in self._specials if special else self._user_defined:
            if not any(isinstance(f, str) and token_text in f for f in fragments):
                continue
            split: list[str | int] = []
            for fragment in fragments:
                if isinstance(fragment, int) or token_text not in fragment:
                    split.append(fragment)
                    continue
                for k, part in enumerate(fragment.split(token_text)):
                    if k:
                        split.append(token_id)
                    if part:
                        split.append(part)
            fragments = split
        ids: list[int] = []
        previous_special = True
        for fragment in fragments:
            if isinstance(fragment, int):
                ids.append(fragment)
                previous_special = True
                continue
            if self._space_prefix and previous_special:
                fragment = " " + fragment
            ids += self._merge(fragment.replace(" ", _ESCAPED_SPACE))
            previous_special = False
        return ids

    def _merge(self, text: str) -> list[int]:
        _, symbols = merge_path(text, self._score)
        ids: list[int] = []
        for symbol in symbols:
            encoded = symbol.encode("utf-8")
            token_id = self.find(encoded)
            ids += [token_id] if token_id >= 0 else [self._bytes[b] for b in encoded]
        return ids


def tables_from_gguf(path: Path) -> dict[str, np.ndarray]:
    """The arrays `SpmTokenizer` works from: pieces and scores from the GGUF, attributes from llama.cpp.

    Takes seconds: do it once (`tidings.device.tables.save_npz`).
    """
    import gguf  # only needed to build the tables
    import llama_cpp

    reader = gguf.GGUFReader(path)
    tokens = reader.get_field(gguf.Keys.Tokenizer.LIST)
    pieces = [bytes(tokens.parts[i]) for i in tokens.data]

    def scalar(key: str, default: int) -> int:
        field = reader.get_field(key)
        return default if field is None else int(field.parts[field.data[0]][0])

    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    attrs = np.array([llama_cpp.llama_vocab_get_attr(vocab, i) for i in range(len(pieces))], dtype=np.int16)
    del llm

    return StringTable.arrays(pieces, "pieces") | {
        "scores": gguf_column(reader.get_field(gguf.Keys.Tokenizer.SCORES), np.float32),
        "attrs": attrs,
        "flags": np.array([scalar(gguf.Keys.Tokenizer.BOS_ID, -1), scalar(gguf.Keys.Tokenizer.ADD_BOS, 0),
                           scalar(gguf.Keys.Tokenizer.ADD_PREFIX, 0)], dtype=np.int64),
    }


def gguf_column(field, dtype: type) -> np.ndarray:
    """A GGUF array field (a `gguf.ReaderField`) of numbers as one numpy array."""
    return np.array([field.parts[i][0] for i in field.data], dtype=dtype)
