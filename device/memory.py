"""Hand memory that loading freed back to the operating system.

Loading a model leaves its scratch buffers (whisper's float16 weights before
int8 conversion, parsed JSON, tokenizer tables) in glibc's free lists, where
they still count as the process's resident memory; the agent's peak is that
plus the next transcription's working set. `malloc_trim` returns them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _libc():
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def release_free_memory() -> None:
    """glibc's malloc_trim(0); nothing where the C library has none (musl, macOS)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
