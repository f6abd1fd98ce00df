"""hibari's grapheme-to-phoneme front end with its tagger's weights in arrays.

hibari's G2P tags every word (to read "read", "live", "record" right) with an
averaged perceptron whose 291k weights it keeps as Python dicts of floats:
57 MB, the largest single piece of the voice stack's memory, and fragmented
enough that freeing it later returns little. `LeanG2P` is hibari's G2P with a
`CompactTagger` whose tables were made once, in a separate process, into the
model cache: about 12 MB, and the same tags (every tag's score is summed in the
same order, in the same float64).

    python -m tidings.device.voice.tagger TABLES.npz   # what ensure_tagger_tables runs
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from hibari.g2p import G2P, Lexicon, Tokenizer, _load_json
from hibari.g2p.tagger import Tagger

TAGGER_MODEL = "tagger.json.gz"  # in hibari's assets
_SEPARATOR = "\n"


def tables_from_model(model: dict) -> dict[str, np.ndarray]:
    """hibari's tagger model (nested dicts) as flat arrays and newline-joined strings."""
    tags = model["tags"]
    tag_index = {tag: i for i, tag in enumerate(tags)}
    weights = model["weights"]
    strings = list(weights) + list(model["tagdict"]) + list(model["tagdict"].values()) + tags + list(model.get("vocab", []))
    if any(_SEPARATOR in s for s in strings):
        raise ValueError("a tagger string contains a newline: it cannot be stored newline-joined")
    rows = list(weights.values())
    return {
        "tags": np.array(_SEPARATOR.join(tags)),
        "features": np.array(_SEPARATOR.join(weights)),
        "starts": np.cumsum([0] + [len(row) for row in rows], dtype=np.int64),
        "tag_ids": np.array([tag_index[t] for row in rows for t in row], dtype=np.int16),
        "weights": np.array([w for row in rows for w in row.values()], dtype=np.float64),
        "tagdict_words": np.array(_SEPARATOR.join(model["tagdict"])),
        "tagdict_tags": np.array([tag_index[t] for t in model["tagdict"].values()], dtype=np.int16),
        "vocab": np.array(_SEPARATOR.join(model["vocab"]) if "vocab" in model else ""),
        "has_vocab": np.array("vocab" in model),
    }


def tagger_tables_path(cache_dir: Path) -> Path:
    from importlib.metadata import version

    return cache_dir / f"hibari-{version('hibari-tts')}-tagger.npz"


def ensure_tagger_tables(cache_dir: Path) -> Path:
    """The tagger tables, made in a child process if missing (its 60 MB of dicts never touch the agent)."""
    path = tagger_tables_path(cache_dir)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "tidings.device.voice.tagger", str(path)], check=True)
    return path


class CompactTagger(Tagger):
    def __init__(self, tables: dict[str, np.ndarray]) -> None:
        self.tags = str(tables["tags"]).split(_SEPARATOR)
        self.tagdict = dict(zip(str(tables["tagdict_words"]).split(_SEPARATOR),
                                (self.tags[i] for i in tables["tagdict_tags"])))
        self.vocab = set(str(tables["vocab"]).split(_SEPARATOR)) if bool(tables["has_vocab"]) else None
        self._features = {feature: i for i, feature in enumerate(str(tables["features"]).split(_SEPARATOR))}
        self._starts, self._tag_ids, self._weights = tables["starts"], tables["tag_ids"], tables["weights"]
        # Tags the weights never mention still compete, at 0; ties go to the later name (as in Tagger.predict).
        self._by_name = sorted(range(len(self.tags)), key=lambda i: self.tags[i])

    @classmethod
    def load(cls, path: Path) -> CompactTagger:
        with np.load(path) as tables:
            return cls({key: tables[key] for key in tables.files})

    def predict(self, feats) -> str:
        scores = np.zeros(len(self.tags))
        seen = False
        for feature in feats:
            row = self._features.get(feature)
            if row is None:
                continue
            start, end = self._starts[row], self._starts[row + 1]
            scores[self._tag_ids[start:end]] += self._weights[start:end]
            seen = True
        if not seen:
            return "NN"
        return self.tags[max(self._by_name, key=lambda i: (scores[i], self.tags[i]))]


class LeanG2P(G2P):
    """hibari 0.2.1's G2P (`hibari.g2p.G2P.__init__`), with a `CompactTagger`."""

    def __init__(self, tagger: CompactTagger, *, british: bool = False) -> None:
        accent = "gb" if british else "us"
        self.lexicon = Lexicon(_load_json(f"lexicon_{accent}_gold.json.gz"),
                               _load_json(f"lexicon_{accent}_silver.json.gz"), british)
        self.tokenizer = Tokenizer(_load_json("tokenizer_exceptions.json"))
        self.tagger = tagger
        self._oov = None
        self.unk = ""
        self.british = british


def _build(path: Path) -> None:
    partial = path.with_name(path.name + ".partial.npz")
    np.savez(partial, **tables_from_model(_load_json(TAGGER_MODEL)))
    os.replace(partial, path)


if __name__ == "__main__":
    _build(Path(sys.argv[1]))
