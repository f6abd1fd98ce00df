"""The benchmark suite's parts on the real model: figures are produced, labelled and checked against goals."""

from __future__ import annotations

import json

import pytest
from tidings.bench.decode_profile import group_of, summary_line
from tidings.bench.suite import (
    LEAN_LABEL,
    LEAN_MODEL,
    PROFILES,
    headline,
    measure_decode_profiles,
    measure_speed,
    measure_stages,
    percentiles,
    projection,
    read_bandwidth_gbs,
)
from tidings.device.config import Config
from tidings.models.quantize import requantize
from tidings.models.registry import ModelError, resolve_model

pytestmark = pytest.mark.model


def test_percentiles():
    assert percentiles([3.0, 1.0, 2.0]) == {"p50": 2.0, "p95": 3.0, "n": 3}
    assert percentiles([]) == {"p50": None, "p95": None, "n": 0}


def test_speed_is_measured_against_raw_llama_cpp_and_the_roofline(embedded_model):
    bandwidth = read_bandwidth_gbs(threads=2, megabytes=64, repeats=2)
    assert bandwidth > 0.5  # GB/s: any machine that runs Tidings reads memory faster than this
    lean = resolve_model(LEAN_MODEL, Config().model.cache_dir)
    variant, lean_variant = measure_speed({"Q4_K_M": embedded_model, LEAN_LABEL: lean}, [2], rounds=1, repeats=1,
                                          bandwidth_gbs={2: bandwidth}, profile=PROFILES["this-machine"])
    entry = variant["threads"][2]
    assert entry["engine"]["gen_tok_s"]["p50"] > 0 and entry["raw"]["gen_tok_s"]["p50"] > 0
    assert entry["generation_ratio_vs_raw"] == pytest.approx(
        entry["engine"]["gen_tok_s"]["p50"] / entry["raw"]["gen_tok_s"]["p50"])
    assert entry["roofline_tok_s"] == pytest.approx(bandwidth * 1e9 / embedded_model.path.stat().st_size)
    assert 0 < entry["generation_ratio_vs_roofline"] < 5
    assert lean_variant["file_mb"] < variant["file_mb"] / 2
    assert lean_variant["threads"][2]["engine_peak_rss_mb"] < entry["engine_peak_rss_mb"]
    values = headline({"variants": [variant, lean_variant], "memory_mb": {"peak_rss": 1.0}, "voice": {},
                       "quality": {}})
    assert values["lean_vs_full_decode_ratio"] == pytest.approx(
        lean_variant["threads"][2]["engine"]["gen_tok_s"]["p50"] / entry["engine"]["gen_tok_s"]["p50"])
    assert 0 < values["lean_vs_full_rss_ratio"] < 1


def test_the_whole_agent_loads_in_one_process_and_every_stage_is_timed():
    result = measure_stages(repeats=1, profile=PROFILES["this-machine"])
    assert set(result["stages"]) == {"ingest_s", "prompt_eval_s", "generation_s", "validation_s",
                                     "tts_first_audio_s", "stt_s", "vad_chunk_s"}
    assert all(s["p50"] > 0 and s["n"] == 1 for s in result["stages"].values())
    memory = result["memory_mb"]
    assert memory["llm+adapter"] > 100  # the model's weights are resident
    assert set(memory) == {"base", "llm+adapter", "stt", "tts", "vad", "beam search", "peak_rss"}
    assert memory["peak_rss"] >= sum(v for k, v in memory.items() if k != "peak_rss") * 0.9


def test_projections_say_they_are_projections_and_goals_are_judged():
    report = {
        "machine": {"bandwidth_gbs": 10.0},
        "variants": [{"name": "Q4_K_M", "threads": {1: {"engine": {"gen_tok_s": {"p50": 40.0}},
                                                          "generation_ratio_vs_raw": 0.97,
                                                          "generation_ratio_vs_roofline": 0.5}}}],
        "memory_mb": {"peak_rss": 650.0}, "voice": {}, "quality": {},
    }
    guess = projection(report, PROFILES["pi4"])
    assert guess["gen_tok_s"] == pytest.approx(16.0) and guess["derivation"].startswith("PROJECTION")
    assert projection(report, PROFILES["this-machine"]) is None
    goals = headline(report)["goals"]
    assert goals["generation_ratio_vs_raw"]["met"] is True
    assert goals["generation_ratio_vs_roofline"]["met"] is False
    assert goals["peak_rss_mb"]["met"] is False
    assert goals["readback_p95_s"]["met"] is None  # not measured is not a pass
    assert goals["lean_vs_full_decode_ratio"]["met"] is None
    json.dumps(goals)


def test_requantized_variants_are_made_once_by_llama_cpp(embedded_model, tmp_path):
    q8 = requantize(embedded_model, "Q8_0", tmp_path)
    assert q8.read_bytes()[:4] == b"GGUF" and q8.stat().st_size > embedded_model.path.stat().st_size
    modified = q8.stat().st_mtime_ns
    assert requantize(embedded_model, "Q8_0", tmp_path).stat().st_mtime_ns == modified
    with pytest.raises(ModelError, match="unknown quantization"):
        requantize(embedded_model, "Q3_WHATEVER", tmp_path)


def test_the_results_table_goes_between_the_readme_markers_and_nowhere_else(tmp_path):
    from tidings.bench.suite import update_readme

    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- tidings bench quick: start -->\nold table\n<!-- tidings bench quick: end -->\nafter\n")
    update_readme(readme, "quick", "| new | table |\n")
    assert readme.read_text() == ("intro\n<!-- tidings bench quick: start -->\n| new | table |\n"
                                  "<!-- tidings bench quick: end -->\nafter\n")
    with pytest.raises(ValueError, match="full: start"):
        update_readme(readme, "full", "| x |\n")
    assert "| new | table |" in readme.read_text()  # a failed update leaves the file as it was


def test_the_results_table_reports_each_goal_with_its_verdict(tmp_path):
    from tidings.bench.suite import results_markdown

    speed = {"engine": {"gen_tok_s": {"p50": 40.0}}, "raw": {"gen_tok_s": {"p50": 41.0}},
             "generation_ratio_vs_raw": 40 / 41, "roofline_tok_s": 100.0, "generation_ratio_vs_roofline": 0.4,
             "engine_peak_rss_mb": 400.0}
    report = {"date": "2026-11-23T05:00:00+00:00", "mode": "quick", "wall_s": 90.0,
              "machine": {"cpu": "Test CPU", "read_bandwidth_gbs": {2: 25.0}},
              "profile": {"name": "this-machine", "cores": 2},
              "variants": [{"name": "Q4_K_M", "threads": {2: speed}}],
              "memory_mb": {"base": 60.0, "llm+adapter": 170.0, "peak_rss": 650.0},
              "stages": {k: {"p50": 0.1} for k in ("prompt_eval_s", "generation_s", "stt_s", "tts_first_audio_s")},
              "generated_tokens": 32, "voice": {"readback_s": {"p95": 1.1}}, "quality": {},
              "faithfulness": {"dev": {"threads": 40, "faithful_rate": 0.975, "complete_rate": 0.6,
                                       "yesno_usable": 9, "yesno_asked": 29}}}
    report["headline"] = headline(report)
    table = results_markdown(report, tmp_path)
    assert "`tidings bench --quick --out " in table and "(1.5 min)" in table and "25.0 GB/s with 2" in table
    assert "| 40.0 / 41.0 tok/s = 0.98 | ≥ 0.95: met |" in table
    assert "| 0.40 | ≥ 0.7: **not met** |" in table
    assert "| 650 MB | ≤ 600: **not met** |" in table
    assert "| message arrival → first spoken word, p95 | n/a | ≤ 0.8: not measured |" in table
    assert "| 1.10 s | ≤ 1.2: met |" in table
    assert "| 97.5% / 60.0% / 9/29 | ≥ 0.97: met; ≥ 0.7: **not met** |" in table


def test_the_decode_profile_charges_each_weight_matrix_to_its_group(embedded_model):
    import gguf

    lean = resolve_model(LEAN_MODEL, Config().model.cache_dir)
    profiles = measure_decode_profiles({"Q4_K_M": embedded_model, LEAN_LABEL: lean}, 2, PROFILES["this-machine"])
    full, trimmed = profiles["Q4_K_M"], profiles[LEAN_LABEL]
    for profile in (full, trimmed):
        assert sum(g["share"] for g in profile["groups"].values()) == pytest.approx(1.0)
        assert profile["plain_ms_per_token"] > 0 and profile["profiled_ms_per_token"] > 0
        assert "weight_gb_s" not in profile["groups"]["other ops"]  # reads no weight matrix
    tensors = {t.name: int(t.n_bytes) for t in gguf.GGUFReader(embedded_model.path).tensors}
    groups = full["groups"]
    # the tied embeddings are the output matrix, read whole once per token
    assert groups["output projection"]["weight_mb_per_token"] == pytest.approx(tensors["token_embd.weight"] / 1e6)
    assert groups["output projection"]["weight_types"] == ["q8_0"]
    ffn = sum(n for name, n in tensors.items() if ".ffn_" in name and "norm" not in name)
    assert groups["FFN weights"]["weight_mb_per_token"] == pytest.approx(ffn / 1e6, rel=0.01)
    # the lean model keeps 32k of the 262k output rows and the same blocks
    lean_output = trimmed["groups"]["output projection"]["weight_mb_per_token"]
    assert lean_output == pytest.approx(groups["output projection"]["weight_mb_per_token"] * 32768 / 262144, rel=0.01)
    assert trimmed["groups"]["FFN weights"]["weight_mb_per_token"] == pytest.approx(ffn / 1e6, rel=0.01)
    assert trimmed["groups"]["output projection"]["ms_per_token"] < groups["output projection"]["ms_per_token"]
    line = summary_line(full, bandwidth_gbs=20.0)
    assert line.startswith("output projection ") and "(q8_0, " in line and "of read bandwidth" in line


def test_graph_nodes_are_grouped_by_the_weight_they_multiply():
    assert group_of("MUL_MAT", "token_embd.weight") == "output projection"
    assert group_of("MUL_MAT", "output.weight") == "output projection"
    assert group_of("MUL_MAT", "blk.3.ffn_down.weight") == "FFN weights"
    assert group_of("MUL_MAT", "blk.0.attn_q.weight") == "attention weights"
    assert group_of("MUL_MAT", None) == group_of("FLASH_ATTN_EXT", None) == "attention over the KV cache"
    assert group_of("GET_ROWS", None) == group_of("RMS_NORM", None) == "other ops"
