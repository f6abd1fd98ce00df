"""The federated benchmark at a tiny scale: every phase runs, the report has its keys and sane values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="federation needs the `train` extra")
pytest.importorskip("rouge_score", reason="the benchmark needs the `bench` extra")
pytest.importorskip("matplotlib", reason="the benchmark needs the `bench` extra")

from tidings.bench.federated_bench import CONFIGS, SECAGG_BYTES_PER_VALUE, device_plan, main  # noqa: E402

VALUES = 46_080  # FFA-LoRA rank 2 on q, v of Gemma 3 270M: only B travels (18 x 2 x (1024 + 256))


def test_the_device_plan_is_fixed_by_the_seed_and_samples_without_replacement():
    plan = device_plan(100, 4, 3, seed=0)
    assert plan == device_plan(100, 4, 3, seed=0)
    assert plan != device_plan(100, 4, 3, seed=1)
    assert all(len(set(sample)) == 4 and all(0 <= p < 100 for p in sample) for sample in plan)
    with pytest.raises(ValueError):
        device_plan(3, 4, 1, seed=0)


@pytest.mark.model
def test_a_tiny_run_reports_every_configuration(tmp_path: Path, capsys):
    out = tmp_path / "out"
    code = main(["--population", "6", "--sample", "2", "--rounds", "1", "--local-steps", "1", "--limit", "2",
                 "--max-examples", "4", "--max-seq-tokens", "384", "--batch-tokens", "384", "--noise-multiplier",
                 "0.1", "--work-dir", str(tmp_path / "work"), "--no-progress", "--out", str(out)])
    assert code == 0
    report = json.loads((out / "federated.json").read_text())
    assert (out / "federated.png").stat().st_size > 10_000
    rows = [json.loads(line) for line in (out / "federated.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(row[name] for row in rows for name in CONFIGS)

    assert {"setup", "evaluation", "results", "comparisons", "federation", "upload_bytes_per_client_per_round",
            "round_seconds_p50", "epsilon", "goals", "timings_seconds"} <= set(report)
    plan = report["setup"]["sampled_devices"]
    assert len(plan) == 1 and len(plan[0]) == 2 and all(0 <= p < 6 for p in plan[0])
    # Both federated configurations trained exactly the planned devices; central saw their data in
    # 1 round x 1 local step = 1 step over both devices' batches together.
    assert report["federation"]["federated"]["sampled_devices"] == plan
    assert report["federation"]["federated_dp"]["sampled_devices"] == plan
    assert report["federation"]["federated"]["clients_per_round"] == [2]
    assert report["setup"]["central"]["steps"] == 1 and report["setup"]["central"]["devices"] == 2
    assert report["setup"]["central"]["batch_tokens"] == 2 * 384

    assert report["evaluation"]["dialogues"] == 2 and "subset" in report["evaluation"]["subset"]
    assert set(report["results"]) == set(CONFIGS)
    for result in report["results"].values():
        assert 0 <= result["rougeL"] <= 100 and result["mean_words"] > 0
    for comparison in report["comparisons"].values():
        low, high = comparison["ci95"]
        assert low <= comparison["rougeL"] <= high

    upload = report["upload_bytes_per_client_per_round"]
    assert upload["int8"]["bytes"] == upload["int8"]["serialized_here"]  # the server's count = the client's encoding
    assert VALUES < upload["int8"]["bytes"] < 0.4e6
    assert 2 * VALUES < upload["fp16"]["bytes"] < 2 * VALUES + 20_000
    assert 4 * VALUES < upload["fp32"]["bytes"] < 4 * VALUES + 20_000
    assert upload["secagg_plus"]["bytes"] == SECAGG_BYTES_PER_VALUE * VALUES and "at least 3" in upload["secagg_plus"]["source"]

    epsilon = report["epsilon"]
    assert epsilon["delta"] == 1e-5 and epsilon["sampling_rate"] == pytest.approx(2 / 6)
    assert 0 < epsilon["value"] and math.isfinite(epsilon["value"])
    assert report["federation"]["federated"]["epsilon"] is None
    assert report["round_seconds_p50"]["federated"] > 0

    goals = report["goals"]
    assert set(goals) == {"default_within_1_rougeL_of_task_adapter", "rougeL_gap", "upload", "upload_secagg_plus"}
    # Two devices a round are far below dp_min_clients: the defaults run without DP, and the goal judges that.
    assert report["default_configuration"]["configuration"] == "federated"
    default = goals["default_within_1_rougeL_of_task_adapter"]
    assert default["value"] == pytest.approx(report["results"]["baseline"]["rougeL"]
                                             - report["results"]["federated"]["rougeL"])
    assert default["met"] == (default["value"] <= 1.0)
    assert goals["upload"]["met"] is True and goals["upload_secagg_plus"]["met"] is True
    assert goals["rougeL_gap"]["met"] == (abs(report["comparisons"]["federated_minus_central"]["rougeL"]) <= 1.0)

    printed = capsys.readouterr().out
    assert "federated - central" in printed and "subset" in printed
    for key, goal in goals.items():
        assert f"goal {key}: " in printed
        assert ("NOT met" in printed.split(f"goal {key}: ")[1].splitlines()[0]) == (not goal["met"])
