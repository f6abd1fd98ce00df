"""A lean output vocabulary: the same weights, far fewer rows in the output layer.

Gemma 3's 262,144-token vocabulary is tied to its output layer, so every
generated token reads all 262k embedding rows; English chat needs a small
fraction of them. A lean model keeps K tokens and slices their rows out of
`token_embd`; every other tensor is copied byte for byte, so the logits of the
kept tokens are exactly the full model's.

Which tokens are kept, in this order until K is reached:
1. ids 0-493 verbatim (pad, eos, bos, unk, the turn markers, the 256 byte
   tokens), every user-defined token (llama.cpp splits those out before
   merging, so dropping one changes every tokenization), and the single
   characters of the scripts Tidings serves (Latin, punctuation, symbols,
   emoji);
2. the tokens of the training splits (prompts as the device builds them, plus
   their answers), most frequent first, a capitalized word with its twin
   without the leading space (names open summaries);
3. a prior for the tail: ASCII tokens in merge-rank order.
Each kept token brings the intermediate pieces llama.cpp's merge loop builds
on the way to it (`spm.merge_path`), or it could never be produced.

The engine still tokenizes with the full vocabulary and maps the ids
(`tidings.device.llm.vocab`), so a lean model reads exactly the input the full
model reads wherever the text's tokens were kept.

    tidings models trim --keep 32768
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
from tidings.device.llm.vocab import FIXED_IDS
from tidings.models.registry import (
    MANIFEST,
    ModelError,
    ModelFile,
    sha256_file,
    verify_file,
)
from tidings.models.spm import gguf_column, merge_path
from tqdm import tqdm

SCRIPT_RANGES = (
    (0x0000, 0x024F),  # Basic Latin to Latin Extended-B
    (0x1E00, 0x1EFF),  # Latin Extended Additional (Vietnamese, Welsh)
    (0x2000, 0x2BFF),  # punctuation, currency, arrows, math, dingbats
    (0x1F000, 0x1FAFF),  # emoji
)
_TOKENS = gguf.Keys.Tokenizer.LIST
_SCORES = gguf.Keys.Tokenizer.SCORES
_TYPES = gguf.Keys.Tokenizer.TOKEN_TYPE


@dataclass(frozen=True)
class BaseVocabulary:
    """The full vocabulary of a GGUF, as the trimmer needs it."""

    pieces: list[str]  # in the vocabulary's own spelling ("▁" for a space)
    scores: np.ndarray
    types: np.ndarray

    @classmethod
    def read(cls, reader: gguf.GGUFReader) -> BaseVocabulary:
        tokens = reader.get_field(_TOKENS)
        pieces = [bytes(tokens.parts[i]).decode("utf-8", errors="replace") for i in tokens.data]
        return cls(pieces, gguf_column(reader.get_field(_SCORES), np.float32),
                   gguf_column(reader.get_field(_TYPES), np.int32))

    def score_map(self) -> dict[str, float]:
        return {piece: float(score) for piece, score in zip(self.pieces, self.scores)}


def mandatory_ids(vocab: BaseVocabulary) -> set[int]:
    kept = set(range(FIXED_IDS))
    for token_id, (piece, kind) in enumerate(zip(vocab.pieces, vocab.types)):
        if kind == gguf.TokenType.USER_DEFINED or kind == gguf.TokenType.NORMAL and len(piece) == 1 and any(lo <= ord(piece) <= hi for lo, hi in SCRIPT_RANGES):
            kept.add(token_id)
    return kept


def ascii_prior(vocab: BaseVocabulary) -> list[int]:
    """Normal ASCII tokens, most frequent merges first (the score is minus the merge rank)."""
    ids = [i for i, (piece, kind) in enumerate(zip(vocab.pieces, vocab.types))
           if kind == gguf.TokenType.NORMAL and piece.replace("▁", " ").isascii()]
    return sorted(ids, key=lambda i: (-vocab.scores[i], i))


def choose_kept(vocab: BaseVocabulary, ranked: Iterable[int], keep: int) -> np.ndarray:
    """Sorted kept ids: the mandatory set, then `ranked` candidates with their merge paths, up to `keep`.

    A capitalized word comes with its twin without the leading space: names
    open a summary ("Eric is…") but mostly appear mid-line in the text.
    """
    index = {piece: i for i, piece in enumerate(vocab.pieces)}
    scores = vocab.score_map()
    kept = mandatory_ids(vocab)
    if len(kept) > keep:
        raise ValueError(f"--keep {keep} is below the {len(kept)} tokens every lean model needs")

    def reachable_path(token_id: int) -> set[int] | None:
        created, final = merge_path(vocab.pieces[token_id], scores.get)
        if final != [vocab.pieces[token_id]]:
            return None  # the tokenizer never produces this token from its own text
        return {index[piece] for piece in created} | {token_id}

    for token_id in ranked:
        if len(kept) >= keep:
            break
        if token_id in kept:
            continue
        needed = reachable_path(token_id)
        if needed is None:
            continue
        piece = vocab.pieces[token_id]
        if piece.startswith("▁") and piece[1:2].isupper() and (twin := index.get(piece[1:])) is not None:
            needed |= reachable_path(twin) or set()
        needed -= kept
        if len(kept) + len(needed) <= keep:
            kept |= needed
    return np.array(sorted(kept), dtype=np.int32)


def unreachable(vocab: BaseVocabulary, kept: np.ndarray) -> list[int]:
    """Kept multi-character tokens whose merge path leaves the kept set (must be empty)."""
    kept_pieces = {vocab.pieces[i]: float(vocab.scores[i]) for i in kept}
    return [int(i) for i in kept if vocab.types[i] == gguf.TokenType.NORMAL and len(vocab.pieces[i]) > 1
            and merge_path(vocab.pieces[i], kept_pieces.get)[1] != [vocab.pieces[i]]]


def coverage(token_ids: Sequence[Sequence[int]], kept: np.ndarray) -> float:
    """Share of token occurrences in `token_ids` whose token is kept."""
    flat = np.concatenate([np.asarray(ids, dtype=np.int64) for ids in token_ids])
    return float(np.isin(flat, kept).mean())


def write_lean_gguf(reader: gguf.GGUFReader, kept: np.ndarray, target: Path, note: str) -> None:
    """The base GGUF with only the `kept` tokens (ids renumbered in order), written atomically."""
    new_id = {int(old): new for new, old in enumerate(kept)}
    arch = reader.get_field(gguf.Keys.General.ARCHITECTURE).contents()
    fd, partial = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".partial")
    os.close(fd)
    os.chmod(partial, 0o644)  # a model file like any other, not mkstemp's private 0600
    try:
        writer = gguf.GGUFWriter(partial, arch)
        for field in reader.fields.values():
            if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
                continue  # the writer adds these itself
            kind = field.types[0]
            if field.name == _TOKENS:
                writer.add_token_list([bytes(field.parts[field.data[i]]) for i in kept])
            elif field.name == _SCORES:
                writer.add_token_scores(gguf_column(field, np.float32)[kept].tolist())
            elif field.name == _TYPES:
                writer.add_token_types(gguf_column(field, np.int32)[kept].tolist())
            elif field.name.startswith("tokenizer.ggml.") and field.name.endswith("_token_id"):
                old = int(field.contents())
                if old not in new_id:
                    raise ValueError(f"{field.name} = {old} is not in the kept set")
                writer.add_key_value(field.name, new_id[old], kind)
            else:
                sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
                writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)
        writer.add_string("tidings.lean.note", note)
        writer.add_uint32("tidings.lean.full_vocabulary", len(reader.get_field(_TOKENS).data))
        # Where the base file keeps every token's input embedding: the engine
        # reads the rows of tokens the lean model lacks from there.
        embd = next(t for t in reader.tensors if t.name == "token_embd.weight")
        writer.add_uint64("tidings.lean.base_token_embd_offset", int(embd.data_offset))
        writer.add_uint32("tidings.lean.base_token_embd_type", int(embd.tensor_type))
        tensors = []
        for tensor in reader.tensors:
            data = tensor.data[kept] if tensor.name == "token_embd.weight" else tensor.data
            tensors.append((tensor.name, data))
            writer.add_tensor_info(tensor.name, data.shape, data.dtype, data.nbytes, tensor.tensor_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for _, data in tqdm(tensors, desc="writing lean GGUF", unit="tensor", leave=False):
            writer.write_tensor_data(data, tensor_endianess=reader.endianess)
        writer.close()
        os.replace(partial, target)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def corpus_token_ids(base_path: Path) -> tuple[list[list[int]], list[list[int]]]:
    """Full-vocabulary ids of the training texts (train part, held-out part), prompts as the device builds them."""
    from tidings.device.llm.prompts import DICTATION_TASK, FORMATS, ROLLING_TASK
    from tidings.models.training.data import (
        build_examples,
        split_holdout,
        training_dialogues,
    )
    from tidings.models.training.data import HOLDOUT
    from tidings.models.training.train import Tokenizer, TrainConfig

    tokenizer = Tokenizer(base_path)
    fmt = FORMATS["gemma"]
    train, held = split_holdout(training_dialogues(), HOLDOUT, TrainConfig().seed)

    def ids(dialogues, seed):
        return [tokenizer.example(e, fmt.end_of_turn).ids
                for e in tqdm(build_examples(fmt, dialogues, reply_share=1.0, seed=seed),
                              desc="tokenizing training text", unit="example", leave=False)]

    fixed = [tokenizer.llm.tokenize(text.encode(), add_bos=False, special=False) for text in (DICTATION_TASK, ROLLING_TASK)]
    return ids(train, 0) + fixed, ids(held, 1)


def build(base_path: Path, keep: int) -> tuple[np.ndarray, dict]:
    """The kept ids for a lean model of `base_path`, and the facts the manifest records about them."""
    reader = gguf.GGUFReader(base_path)
    vocab = BaseVocabulary.read(reader)
    train_ids, held_ids = corpus_token_ids(base_path)
    counts = Counter(token for ids in train_ids for token in ids)
    ranked = [token for token, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))] + ascii_prior(vocab)
    kept = choose_kept(vocab, ranked, keep)
    dead = unreachable(vocab, kept)
    if dead:
        raise AssertionError(f"{len(dead)} kept tokens cannot be produced by the tokenizer: {dead[:5]}")
    kept_set = set(kept.tolist())
    facts = {"kept": len(kept), "full_vocabulary": len(vocab.pieces),
             "training_tokens_kept": sum(1 for t in counts if t in kept_set),
             "training_tokens_distinct": len(counts),
             "held_out_coverage": round(coverage(held_ids, kept), 4)}
    return kept, facts


def make_lean_model(base_path: Path, kept_ids_path: Path, target: Path) -> Path:
    """Write the lean GGUF for these kept ids, with the id map beside it (`<target>.kept.npy`)."""
    kept = np.load(kept_ids_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_lean_gguf(gguf.GGUFReader(base_path), kept, target,
                    f"lean vocabulary of {base_path.name}: {len(kept)} of its tokens (tidings models trim)")
    np.save(kept_id_map_path(target), kept)
    return target


def kept_id_map_path(model_path: Path) -> Path:
    return model_path.with_name(model_path.stem + ".kept.npy")


def manifest_entry(name: str, base: str, kept_ids: str, facts: dict, sha256: str, size: int) -> str:
    return (f'[lean."{name}"]\n'
            f'description = "{base} with {facts["kept"]:,} of its {facts["full_vocabulary"]:,} tokens in the output layer"\n'
            f'base = "{base}"\nkept_ids = "{kept_ids}"\nkept = {facts["kept"]}\n'
            f'held_out_coverage = {facts["held_out_coverage"]}\nsha256 = "{sha256}"\nsize_bytes = {size}\n')


def upsert_manifest_section(text: str, header: str, entry: str) -> str:
    """`text` with the TOML table starting at `header` replaced by `entry` (appended if absent)."""
    lines = text.splitlines(keepends=True)
    if header + "\n" not in lines:
        return text.rstrip("\n") + "\n\n" + entry
    start = lines.index(header + "\n")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("[")), len(lines))
    while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].startswith("#")):
        end -= 1  # blank lines and the next table's comments stay
    return "".join(lines[:start]) + entry + "".join(lines[end:])


def trim(base: ModelFile, keep: int, name: str, cache_dir: Path) -> dict:
    """Choose the kept tokens, build the lean model into the cache and record it in the manifest."""
    if base.spec is None or base.lean is not None:
        raise ModelError("trim a base model from the manifest (its training data and prompt format are known)")
    kept, facts = build(base.path, keep)
    kept_ids = f"lean/{name}.kept.npy"
    (MANIFEST.parent / "lean").mkdir(exist_ok=True)
    np.save(MANIFEST.parent / kept_ids, kept)
    target = make_lean_model(base.path, MANIFEST.parent / kept_ids, cache_dir / f"{name}.gguf")
    sha256, size = sha256_file(target), target.stat().st_size
    verify_file(target, sha256)
    MANIFEST.write_text(upsert_manifest_section(MANIFEST.read_text(), f'[lean."{name}"]',
                                                manifest_entry(name, base.spec.name, kept_ids, facts, sha256, size)))
    return facts | {"name": name, "path": str(target), "sha256": sha256, "size_bytes": size,
                    "kept_ids": str(MANIFEST.parent / kept_ids)}
