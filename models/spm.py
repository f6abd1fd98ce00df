"""The merge loop of llama.cpp's SentencePiece (SPM) tokenizer, in Python.

Choosing a smaller vocabulary needs to know which pieces the tokenizer builds
on its way to a token: llama.cpp only queues a merge whose result is itself in
the vocabulary, so a kept token whose intermediate pieces were dropped can
never be produced again. `merge_path` replays llama.cpp's loop
(`llm_tokenizer_spm_session`: characters as symbols, the highest-scoring
adjacent pair merged first, ties to the leftmost) and returns every piece it
creates.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping


def merge_path(text: str, scores: Mapping[str, float]) -> tuple[list[str], list[str]]:
    """(pieces created by merges in order, final symbols) for `text` under vocabulary `scores`.

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
        score = scores.get(piece)
        if score is not None:
            heapq.heappush(queue, (-score, left, right, len(piece)))

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
