"""Split a stream of generated text into whole sentences, each as soon as it ends.

The summarizer checks a streamed summary sentence by sentence and the voice
loop speaks each one while the next is still being generated.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

_END = re.compile(r"""[.!?…]["'”’)\]]*(?=\s)|\n""")
_ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "e.g", "i.e", "a.m", "p.m"})


def _split_point(text: str) -> tuple[int, int] | None:
    """(end of the first complete sentence, start of the rest), or None."""
    for match in _END.finditer(text):
        following = text[match.end():].lstrip()
        if not following:
            return None
        rest = len(text) - len(following)
        if "\n" not in text[match.start():rest]:
            words = text[:match.start()].split()
            word = words[-1].lower() if words else ""
            initial = len(word) == 1 and word.isalpha()  # "J. Smith"
            if following[0].islower() or (text[match.start()] == "." and (word in _ABBREVIATIONS or initial)):
                continue
        return match.end(), rest
    return None


def sentences(pieces: Iterable[str]) -> Iterator[str]:
    """Whole sentences from a stream of text pieces, each as soon as the next one begins."""
    buffer = ""
    for piece in pieces:
        buffer += piece
        while (split := _split_point(buffer)) is not None:
            sentence, buffer = buffer[:split[0]].strip(), buffer[split[1]:]
            if sentence:
                yield sentence
    if buffer.strip():
        yield buffer.strip()
