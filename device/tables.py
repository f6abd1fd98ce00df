"""Strings kept in one bytes blob and found through a sorted array of their hashes.

A Python dict of 100k short strings costs about 100 bytes an entry; these
tables cost about 20. Used for the vocabulary a lean engine tokenizes with
(262k pieces) and the pronunciation lexicons of the voice (180k words).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


class StringTable:
    def __init__(self, arrays: dict[str, np.ndarray], name: str) -> None:
        self._blob = arrays[f"{name}_blob"].tobytes()
        self._offsets = arrays[f"{name}_offsets"]
        self._hashes = arrays[f"{name}_hashes"]
        self._by_hash = arrays[f"{name}_by_hash"]

    @staticmethod
    def arrays(strings: Sequence[bytes], name: str) -> dict[str, np.ndarray]:
        """What a table of `strings` is made of, under keys starting with `name` (several tables share an npz)."""
        offsets = np.zeros(len(strings) + 1, dtype=np.int64)
        np.cumsum([len(s) for s in strings], out=offsets[1:])
        hashes = np.array([zlib.crc32(s) for s in strings], dtype=np.uint32)
        by_hash = np.argsort(hashes, kind="stable").astype(np.int32)
        return {f"{name}_blob": np.frombuffer(b"".join(strings), dtype=np.uint8), f"{name}_offsets": offsets,
                f"{name}_hashes": hashes[by_hash], f"{name}_by_hash": by_hash}

    def __getitem__(self, index: int) -> bytes:
        return self._blob[self._offsets[index]:self._offsets[index + 1]]

    def find(self, text: bytes) -> int:
        """The index of `text`, or -1; the last one where it occurs several times (as a dict built in order keeps)."""
        h = zlib.crc32(text)
        found = -1
        # The hash as the array's own dtype: a Python int would make numpy convert the whole array.
        i = int(self._hashes.searchsorted(np.uint32(h)))
        while i < len(self._hashes) and self._hashes[i] == h:
            candidate = int(self._by_hash[i])
            if self[candidate] == text:
                found = max(found, candidate)
            i += 1
        return found


def save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Written whole or not at all; a builder's partial file is named by its pid, so concurrent ones never share it."""
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial.npz")
    np.savez(partial, **arrays)
    os.replace(partial, path)
