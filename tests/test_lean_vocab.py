"""The lean output vocabulary: its kept set, its file, and a lean engine reading exactly what the full one reads."""

from __future__ import annotations

import os

import gguf
import llama_cpp
import numpy as np
import pytest
from tidings.device.agent import TASK_ADAPTER, open_summarizer
from tidings.device.config import Config, EngineConfig, with_overrides
from tidings.device.llm.engine import Engine
from tidings.device.llm.prompts import FORMATS, render_dialogue, summary_prompt
from tidings.device.llm.vocab import FIXED_IDS
from tidings.models.registry import (
    ModelError,
    ensure_lean_model,
    load_lean_manifest,
    resolve_adapter,
    resolve_model,
)
from tidings.models.spm import SpmTokenizer, merge_path
from tidings.models.training.data import split_holdout, training_dialogues
from tidings.models.trim import (
    BaseVocabulary,
    build,
    unreachable,
    upsert_manifest_section,
)

from tests.conftest import SHARED_DATA

LEAN = "gemma3-270m-q4_k_m-lean32k"
TEXTS = [
    "Zoë and José: naïve façade, Øresund, Łódź, Ærøskøbing",
    "see you there 👋🏽🎉 ok 👍 ❤️‍🔥",
    "مرحبا بالعالم — שלום עולם",
    "pneumonoultramicroscopicsilicovolcanoconiosis at Tesco with a quokka",
    "東京で会いましょう 서울 Привет",
    "tabs\tand  double  spaces\n\nand new lines",
]


@pytest.fixture(scope="module")
def vocab(embedded_model) -> BaseVocabulary:
    return BaseVocabulary.read(gguf.GGUFReader(embedded_model.path))


@pytest.fixture(scope="module")
def kept() -> np.ndarray:
    return np.load(load_lean_manifest()[LEAN].kept_ids_path)


@pytest.fixture(scope="module")
def engines(embedded_model):
    cache = Config().model.cache_dir
    full = Engine(embedded_model, EngineConfig(n_ctx=1024, n_threads=2))
    lean = Engine(resolve_model(LEAN, cache), EngineConfig(n_ctx=1024, n_threads=2))
    adapter = resolve_adapter("tidings-task", embedded_model)
    for engine in (full, lean):
        engine.load_adapter(adapter, "task")
        engine.set_adapters({"task": 1.0})
    yield full, lean
    full.close()
    lean.close()


def held_out_prompts(n: int):
    _, held = split_holdout(training_dialogues(SHARED_DATA), 0.08, 0)
    return [summary_prompt(FORMATS["gemma"], render_dialogue(d.messages)) for d in held[:n]]


def test_the_merge_loop_mirrors_llama_cpp_tokenization(embedded_model, vocab):
    llm = llama_cpp.Llama(model_path=str(embedded_model.path), vocab_only=True, verbose=False)
    scores = vocab.score_map()
    lines = [line for p in held_out_prompts(20) for line in p.text.split("\n") if line and "<" not in line]
    lines += [t for t in TEXTS if "\n" not in t and "\t" not in t and "  " not in t]
    assert len(lines) > 100
    for line in lines:
        ids = llm.tokenize(line.encode(), add_bos=False, special=False)
        _, final = merge_path(line.replace(" ", "▁"), scores.get)
        if all(piece in scores for piece in final):  # else llama.cpp falls back to bytes
            assert [vocab.pieces[i] for i in ids] == final, line


def test_the_compact_tokenizer_gives_llama_cpps_ids_and_pieces(embedded_model):
    llm = llama_cpp.Llama(model_path=str(embedded_model.path), vocab_only=True, verbose=False)
    tokenizer = SpmTokenizer.load(resolve_model(LEAN, Config().model.cache_dir).full_tokenizer)
    texts = [p.text for p in held_out_prompts(40)] + TEXTS + [
        "", " ", "a</s>b <eos> <start_of_turn>model\n", "<b>bold</b>\n\n\n\n<table>", "\u2581 already escaped"]
    for text in texts:
        for special in (False, True):
            expected = llm.tokenize(text.encode(), add_bos=False, special=special)
            assert tokenizer.tokenize(text, special=special) == expected, (text, special)
    assert tokenizer.bos == llm.token_bos()
    for token_id in range(0, tokenizer.n_vocab, 7):
        for special in (False, True):
            expected = llm.detokenize([token_id], special=special)
            got = tokenizer.piece(token_id, special=special)
            # llama-cpp-python reads pieces into a 32-byte buffer: a longer one comes back empty
            assert got == expected or (expected == b"" and len(got) > 32), (token_id, special)


def test_the_kept_set_keeps_fixed_ids_and_every_token_stays_reachable(vocab, kept):
    assert len(kept) == load_lean_manifest()[LEAN].kept
    assert np.all(np.diff(kept) > 0)
    assert list(kept[:FIXED_IDS]) == list(range(FIXED_IDS))  # bos, eos, turn markers, bytes keep their ids
    user_defined = np.flatnonzero(vocab.types == gguf.TokenType.USER_DEFINED)
    assert np.isin(user_defined, kept).all()
    assert unreachable(vocab, kept) == []


def test_a_top_k_set_without_merge_closure_would_leave_tokens_unreachable(vocab):
    # Why the closure matters: the most frequent tokens alone miss the pieces they are built from.
    naive = np.array(sorted(set(range(FIXED_IDS)) | set(range(1000, 9000))), dtype=np.int32)
    assert len(unreachable(vocab, naive)) > 100


def test_build_reports_its_kept_set_and_coverage(embedded_model, vocab):
    kept, facts = build(embedded_model.path, 8192)
    assert facts["kept"] == len(kept) == 8192
    assert 0.85 < facts["held_out_coverage"] < 1.0
    assert unreachable(vocab, kept) == []


@pytest.mark.parametrize("text", TEXTS)
def test_text_round_trips_through_the_id_map(engines, text):
    _, lean = engines
    ids = lean.tokenizer.text(text)
    assert all(0 <= i < lean.llm.n_vocab() for i in ids)
    assert lean.llm.detokenize(ids).decode("utf-8") == text


def test_lean_logits_equal_the_full_models_on_kept_tokens_even_for_dropped_input(engines, kept):
    full, lean = engines
    prompts = [p for p in held_out_prompts(12)
               if not np.isin(full.tokenize(p), kept).all()][:2]
    assert prompts, "no held-out prompt has a dropped token: the test would prove nothing"
    for prompt in prompts:
        expected = full.next_token_logits(full.tokenize(prompt))[kept]
        lean.reset_cache()
        lean.tokenizer.prepare(prompt)
        got = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(lean.llm.ctx, -1), shape=(len(kept),))
        assert np.array_equal(got, expected.astype(np.float32))


def test_lean_output_equals_the_full_models_whenever_its_tokens_were_kept(engines, kept):
    full, lean = engines
    kept_set = set(kept.tolist())
    compared = 0
    for prompt in held_out_prompts(10):
        expected = full.complete(prompt, max_tokens=48)
        got = lean.complete(prompt, max_tokens=48)
        full_ids = full.llm.tokenize(expected.text.encode(), add_bos=False, special=False)
        if all(t in kept_set for t in full_ids):
            compared += 1
            assert got.text == expected.text
    assert compared >= 5


def test_spelled_input_is_the_plain_alternative(embedded_model, engines):
    _, exact = engines
    spelled = Engine(resolve_model(LEAN, Config().model.cache_dir), EngineConfig(n_ctx=1024, lean_input="spelled"))
    try:
        prompt = held_out_prompts(1)[0]
        assert spelled.tokenize(prompt) == exact.tokenize(prompt)
        assert spelled.complete(prompt, max_tokens=8).text
        assert spelled.complete(prompt, max_tokens=8, beams=2).text
    finally:
        spelled.close()


def test_the_lean_model_is_rebuilt_from_its_kept_ids_to_the_manifest_checksum(embedded_model, tmp_path):
    spec = load_lean_manifest()[LEAN]
    os.symlink(embedded_model.path, tmp_path / embedded_model.path.name)
    model = ensure_lean_model(spec, tmp_path)
    assert model.path == tmp_path / f"{LEAN}.gguf" and model.lean == spec
    assert model.full_vocabulary == tmp_path / embedded_model.path.name
    model.path.write_bytes(b"GGUF" + b"\0" * 64)  # a damaged cache file is made again, not used
    model.full_tokenizer.write_bytes(b"PK\0\0 not a zip")
    again = ensure_lean_model(spec, tmp_path)
    assert again.path.stat().st_size == spec.size_bytes
    assert SpmTokenizer.load(again.full_tokenizer).tokenize("Hello there", special=False)


def test_a_missing_kept_id_list_is_a_clear_error(embedded_model, tmp_path, monkeypatch):
    spec = load_lean_manifest()[LEAN]
    os.symlink(embedded_model.path, tmp_path / embedded_model.path.name)
    monkeypatch.setattr(type(spec), "kept_ids_path", property(lambda self: tmp_path / "nowhere.npy"))
    with pytest.raises(ModelError, match="kept-token list .* is missing"):
        ensure_lean_model(spec, tmp_path)


def test_lean_input_mode_is_checked():
    with pytest.raises(ValueError, match="lean_input"):
        with_overrides(Config(), engine={"lean_input": "guess"})


def test_manifest_sections_are_replaced_in_place():
    text = '[a]\nx = 1\n\n[lean."m"]\nold = 1\n\n# the next table\n[b]\ny = 2\n'
    updated = upsert_manifest_section(text, '[lean."m"]', '[lean."m"]\nnew = 2\n')
    assert updated == '[a]\nx = 1\n\n[lean."m"]\nnew = 2\n\n# the next table\n[b]\ny = 2\n'
    assert upsert_manifest_section("[a]\n", '[lean."n"]', '[lean."n"]\nz = 3\n') == '[a]\n\n[lean."n"]\nz = 3\n'


def test_the_agent_runs_a_lean_model_with_its_base_models_adapter():
    summarizer = open_summarizer(with_overrides(Config(), model={"name": LEAN}))
    try:
        assert summarizer.engine.model.lean is not None
        assert summarizer.engine.active_adapters == {TASK_ADAPTER: 1.0}
    finally:
        summarizer.engine.close()


def test_a_one_beam_search_is_greedy_decoding_on_the_full_and_the_lean_model(engines):
    # One beam still copies its cache to a new sequence at every step and, on the lean model,
    # reads every token back from its embedding row: none of it may change a logit.
    for engine in engines:
        for prompt in held_out_prompts(4):
            engine.reset_cache()
            greedy = engine.complete(prompt, max_tokens=48, stop=("\n\n",))
            searched = engine.beam_search(prompt, beams=1, max_tokens=48, stop=("\n\n",))
            assert searched.text == greedy.text


def test_a_lean_model_beam_searches_over_kept_and_copied_tokens(engines, kept):
    _, lean = engines
    chat = ("Zbigniew: Can you bring the quokka to Łódź on Friday?\nMarta: Sure, I'll take the 9am train.\n"
            "Zbigniew: Great, Szczepan will meet you at the station.")
    prompt = summary_prompt(FORMATS["gemma"], chat)
    summary = lean.complete(prompt, max_tokens=48, beams=4, length_penalty=2.0)
    assert summary.finish_reason == "stop"
    assert "Zbigniew" in summary.text and "quokka" in summary.text
    # Both words need tokens the lean model dropped: the beam copied them from the prompt.
    full_ids = lean.tokenizer.full.tokenize(summary.text, special=False)
    assert not set(full_ids) <= set(kept.tolist())


def test_a_word_of_the_prompt_can_be_said_spaced_or_not_and_in_its_usual_cases(engines):
    _, lean = engines
    full = lean.tokenizer.full
    [spaced] = full.tokenize(" Eric", special=False)
    [bare] = full.tokenize("Eric", special=False)
    assert {spaced, bare} <= set(lean.tokenizer._word_tokens("eric"))
    # At the start of a chat line "Martina" is two pieces; mid-sentence " Martina" is one token.
    pieces = full.tokenize("Martina", special=False)
    assert len(pieces) == 2
    assert full.tokenize(" Martina", special=False)[0] in lean.tokenizer._word_tokens("Martina")
    assert lean.tokenizer._word_tokens("pneumonoultramicroscopicsilicovolcanoconiosis") == []
