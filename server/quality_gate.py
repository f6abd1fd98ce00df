"""No version reaches a device without passing the quality gate.

After each round the candidate global adapter is measured the way devices
run it, stacked on the task adapter in llama.cpp (bench/candidate_eval.py:
ROUGE-L on held-out SAMSum validation dialogues, faithfulness and
completeness on the wearer dev suite). It is published only if it does not
regress beyond the tolerances against both references:

* the task adapter alone (what a device runs without the fleet), so small
  regressions cannot add up round after round;
* the last published version (its figures are in its own `gate` record).

Otherwise it is kept as a rejected version: its arrays, its figures and the
reasons, signed like any version but never listed for devices, which stay on
the last good one. The next round starts again from the last good version.
The task adapter's own figures are measured once and cached in STATE/gate/.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from tidings.federated.atomic import write_atomically
from tidings.server.registry import Version

log = logging.getLogger("tidings")


@dataclass(frozen=True)
class Tolerance:
    rouge_l: float = 2.0  # ROUGE-L points
    faithful_rate: float = 0.0  # a thread summarized unfaithfully is never traded for anything
    complete_rate: float = 0.05


@dataclass(frozen=True)
class Verdict:
    passed: bool
    candidate: dict
    references: dict  # name -> figures
    reasons: list

    def to_json(self) -> dict:
        return {"passed": self.passed, "candidate": self.candidate, "references": self.references,
                "reasons": self.reasons}


def judge(candidate: dict, references: dict[str, dict], tolerance: Tolerance) -> Verdict:
    reasons = []
    for name, reference in references.items():
        for metric in ("rouge_l", "faithful_rate", "complete_rate"):
            allowed = reference[metric] - getattr(tolerance, metric)
            if candidate[metric] < allowed - 1e-9:
                reasons.append(f"{metric} {candidate[metric]:.3f} < {reference[metric]:.3f} of {name} "
                               f"- {getattr(tolerance, metric)}")
    return Verdict(not reasons, candidate, references, reasons)


class QualityGate:
    def __init__(self, state_dir: Path, *, dialogues: int, threads: int, tolerance: Tolerance,
                 n_threads: int = 0) -> None:
        self.cache = Path(state_dir) / "gate"
        self.dialogues, self.threads = dialogues, threads
        self.tolerance = tolerance
        self.n_threads = n_threads
        self._evaluator = None

    def _evaluate(self, gguf: Path | None) -> dict:
        from tidings.bench.candidate_eval import CandidateEvaluator

        if self._evaluator is None:  # loaded on first use: a run whose rounds all fail never loads the model
            self._evaluator = CandidateEvaluator(self.dialogues, self.threads, self.n_threads)
        return self._evaluator.evaluate(gguf).to_json()

    def task_adapter_figures(self) -> dict:
        path = self.cache / f"task-d{self.dialogues}-t{self.threads}.json"
        if path.is_file():
            return json.loads(path.read_text())
        figures = self._evaluate(None)
        self.cache.mkdir(parents=True, exist_ok=True)
        write_atomically(path, json.dumps(figures))
        log.warning("quality gate: the task adapter alone scores ROUGE-L %.2f, faithful %.1f%%, complete %.1f%%",
                    figures["rouge_l"], 100 * figures["faithful_rate"], 100 * figures["complete_rate"])
        return figures

    def check(self, candidate_gguf: Path, last_good: Version) -> Verdict:
        references = {"the task adapter alone": self.task_adapter_figures()}
        previous = last_good.gate.get("candidate") if last_good.gate else None
        if previous and (previous["dialogues"], previous["threads"]) == (self.dialogues, self.threads):
            references[f"version {last_good.version}"] = previous
        verdict = judge(self._evaluate(candidate_gguf), references, self.tolerance)
        c = verdict.candidate
        log.warning("quality gate: candidate ROUGE-L %.2f, faithful %.1f%%, complete %.1f%%: %s", c["rouge_l"],
                    100 * c["faithful_rate"], 100 * c["complete_rate"],
                    "passed" if verdict.passed else "REJECTED (" + "; ".join(verdict.reasons) + ")")
        return verdict

    def close(self) -> None:
        if self._evaluator is not None:
            self._evaluator.close()
