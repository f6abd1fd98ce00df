"""The DP utility bench at a tiny scale: it noises the adapter as the server would, and scores what that does."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rouge_score", reason="the benchmark needs the `bench` extra")
pytest.importorskip("matplotlib", reason="the benchmark needs the `bench` extra")

from tidings.bench.dp_utility import main, noised_initial  # noqa: E402

pytestmark = pytest.mark.model


def test_the_noise_is_the_servers_on_b_only():
    arrays, _ = noised_initial(seed=0, std=0.5)
    clean, _ = noised_initial(seed=0, std=0.0)
    b = np.concatenate([arrays[n].ravel() for n in arrays if ".lora_B." in n])
    assert abs(b.std() - 0.5) < 0.01 and np.all(np.concatenate([clean[n].ravel() for n in clean
                                                               if ".lora_B." in n]) == 0)
    assert all(np.array_equal(arrays[n], clean[n]) for n in arrays if ".lora_A." in n)


def test_a_tiny_run_reports_the_cost_of_the_noise_and_resumes(tmp_path: Path, capsys):
    args = ["--clients", "3", "3000", "--rounds", "10", "--dialogues", "2", "--out", str(tmp_path)]
    assert main(args) == 0
    report = json.loads((tmp_path / "dp_utility.json").read_text())
    assert (tmp_path / "dp_utility.png").stat().st_size > 10_000
    few, many = sorted(report["rows"], key=lambda r: r["clients"])
    assert few["noise_std"] == pytest.approx(math.sqrt(10) / 3) and many["noise_std"] == pytest.approx(math.sqrt(10) / 3000)
    assert few["epsilon"] < many["epsilon"]  # more devices sampled from the same population: less amplification
    assert few["rouge_l_drop"] > 10  # std 1 on every value of B: nothing of the summary is left
    assert few["rouge_l_drop"] == pytest.approx(report["baseline"]["rouge_l"] - few["rouge_l"])
    capsys.readouterr()
    assert main(args) == 0  # every row is in the partial file: nothing is measured again
    assert "z=1.0 m=" not in capsys.readouterr().out
