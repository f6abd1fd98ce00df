"""hibari's grapheme-to-phoneme front end, with its tables in flat arrays.

hibari's G2P keeps its pronunciation lexicons (180k words) and its
part-of-speech tagger (an averaged perceptron, to read "read", "live",
"record" right: 291k weights) as Python dicts: about 105 MB, the largest
piece of the voice stack's memory, and fragmented enough that freeing it later
returns little. `LeanG2P` is hibari's G2P over the same tables made once, in a
child process, into the model cache: a `StringTable` per lexicon and the
tagger's weights as a sparse matrix. Same phonemes (tested); a tag's score is
summed in the same order, in the same float64.

    python -m tidings.device.voice.g2p TABLES.npz [--british]   # what ensure_g2p_tables runs
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from hibari.g2p import G2P, Lexicon, Tokenizer, _load_json
from hibari.g2p.tagger import Tagger
from tidings.device.tables import StringTable, save_npz

_SEPARATOR = "\n"


def tagger_arrays(model: dict) -> dict[str, np.ndarray]:
    """hibari's tagger model (nested dicts) as flat arrays and string tables."""
    tags = model["tags"]
    tag_index = {tag: i for i, tag in enumerate(tags)}
    rows = list(model["weights"].values())
    if any(_SEPARATOR in tag for tag in tags):
        raise ValueError("a tag contains a newline: tags cannot be stored newline-joined")
    return (StringTable.arrays([f.encode() for f in model["weights"]], "features")
            | StringTable.arrays([w.encode() for w in model["tagdict"]], "tagdict")
            | StringTable.arrays([w.encode() for w in model.get("vocab", [])], "vocab")
            | {"tags": np.array(_SEPARATOR.join(tags)),
               "starts": np.cumsum([0] + [len(row) for row in rows], dtype=np.int64),
               "tag_ids": np.array([tag_index[t] for row in rows for t in row], dtype=np.int16),
               "weights": np.array([w for row in rows for w in row.values()], dtype=np.float64),
               "tagdict_tags": np.array([tag_index[t] for t in model["tagdict"].values()], dtype=np.int16),
               "has_vocab": np.array("vocab" in model)})


def lexicon_arrays(lexicon: dict, name: str) -> dict[str, np.ndarray]:
    """A lexicon (word -> phonemes, or -> {tag: phonemes}) as two string tables; the second kind as JSON."""
    return (StringTable.arrays([word.encode() for word in lexicon], f"{name}_words")
            | StringTable.arrays([(v if isinstance(v, str) else json.dumps(v)).encode() for v in lexicon.values()],
                                 f"{name}_readings")
            | {f"{name}_is_json": np.array([not isinstance(v, str) for v in lexicon.values()])})


class CompactLexicon:
    """What hibari's lexicon asks of its dict: `get(word)`."""

    def __init__(self, arrays: dict[str, np.ndarray], name: str) -> None:
        self._words = StringTable(arrays, f"{name}_words")
        self._readings = StringTable(arrays, f"{name}_readings")
        self._is_json = arrays[f"{name}_is_json"]

    def get(self, word: str, default=None):
        i = self._words.find(word.encode())
        if i < 0:
            return default
        reading = self._readings[i].decode()
        return json.loads(reading) if self._is_json[i] else reading


class CompactTagger(Tagger):
    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.tags = str(arrays["tags"]).split(_SEPARATOR)
        self.tagdict = _TagDict(StringTable(arrays, "tagdict"), arrays["tagdict_tags"], self.tags)
        self.vocab = _Members(StringTable(arrays, "vocab")) if bool(arrays["has_vocab"]) else None
        self._features = StringTable(arrays, "features")
        self._starts, self._tag_ids, self._weights = arrays["starts"], arrays["tag_ids"], arrays["weights"]
        # Tags the weights never mention still compete, at 0; ties go to the later name (as in Tagger.predict).
        self._by_name = sorted(range(len(self.tags)), key=lambda i: self.tags[i])

    def predict(self, feats) -> str:
        scores = np.zeros(len(self.tags))
        seen = False
        for feature in feats:
            row = self._features.find(feature.encode())
            if row < 0:
                continue
            start, end = self._starts[row], self._starts[row + 1]
            scores[self._tag_ids[start:end]] += self._weights[start:end]
            seen = True
        if not seen:
            return "NN"
        return self.tags[max(self._by_name, key=lambda i: (scores[i], self.tags[i]))]


class _TagDict:
    """What the tagger asks of its word -> tag dict: `get(word)`."""

    def __init__(self, words: StringTable, tag_ids: np.ndarray, tags: list[str]) -> None:
        self._words, self._tag_ids, self._tags = words, tag_ids, tags

    def get(self, word: str, default=None):
        i = self._words.find(word.encode())
        return default if i < 0 else self._tags[self._tag_ids[i]]


class _Members:
    def __init__(self, table: StringTable) -> None:
        self._table = table

    def __contains__(self, word: str) -> bool:
        return self._table.find(word.encode()) >= 0


class LeanG2P(G2P):
    """hibari 0.2.1's G2P (`hibari.g2p.G2P.__init__`) over compact tables."""

    def __init__(self, tables: Path, *, british: bool = False) -> None:
        with np.load(tables) as f:
            arrays = {key: f[key] for key in f.files}
        self.lexicon = Lexicon(CompactLexicon(arrays, "gold"), CompactLexicon(arrays, "silver"), british)
        self.tokenizer = Tokenizer(_load_json("tokenizer_exceptions.json"))
        self.tagger = CompactTagger(arrays)
        self._oov = None
        self.unk = ""
        self.british = british


def g2p_tables_path(cache_dir: Path, *, british: bool = False) -> Path:
    from importlib.metadata import version

    return cache_dir / f"hibari-{version('hibari-tts')}-g2p-{'gb' if british else 'us'}.npz"


def ensure_g2p_tables(cache_dir: Path, *, british: bool = False) -> Path:
    """The G2P tables, made in a child process if missing (hibari's 105 MB of dicts never touch the agent)."""
    path = g2p_tables_path(cache_dir, british=british)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "tidings.device.voice.g2p", str(path)] + (["--british"] if british else []),
                       check=True)
    return path


def _build(path: Path, british: bool) -> None:
    accent = "gb" if british else "us"
    arrays = (tagger_arrays(_load_json("tagger.json.gz"))
              | lexicon_arrays(_load_json(f"lexicon_{accent}_gold.json.gz"), "gold")
              | lexicon_arrays(_load_json(f"lexicon_{accent}_silver.json.gz"), "silver"))
    save_npz(path, arrays)


if __name__ == "__main__":
    _build(Path(sys.argv[1]), "--british" in sys.argv[2:])
