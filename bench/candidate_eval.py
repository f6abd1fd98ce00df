"""A candidate fleet adapter, measured the way devices would run it: the quality gate's evaluation.

One llama.cpp engine holds the shipped task adapter; each candidate global
adapter is stacked on it at the device's scales (AdapterStack) and measured on

* ROUGE-L F1 of the summarizer's first draft (`model_summaries`, greedy) on the
  first N SAMSum validation dialogues of the slice training holds out (no
  adapter, task or federated, trains on them; SAMSum test is never used);
* faithfulness on the first M threads of the wearer dev suite, through the
  device's own path: a fresh store, the summarizer with wearer Alex, every
  validator and the fallback (`announce_unread`), scored by bench/faithfulness.

    python -m tidings.bench.candidate_eval [--adapter global.gguf] [--dialogues 65] [--threads 40]

The server's quality gate (server/quality_gate.py) calls `CandidateEvaluator`
after every round; this command prints the same figures for one adapter.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

TASK_ADAPTER = "tidings-task"


@dataclass(frozen=True)
class CandidateFigures:
    rouge_l: float  # mean ROUGE-L F1 x 100 on the gate dialogues
    faithful_rate: float  # share of the gate threads whose summary is faithful
    complete_rate: float
    dialogues: int
    threads: int
    seconds: float

    def to_json(self) -> dict:
        return asdict(self)


class CandidateEvaluator:
    def __init__(self, dialogues: int = 65, threads: int = 40, n_threads: int = 0, progress: bool = False) -> None:
        from rouge_score import rouge_scorer

        from tidings.bench.faithfulness import SUITES, load_suite
        from tidings.bench.summary_eval import split_dialogues
        from tidings.device.config import Config, EngineConfig
        from tidings.device.llm.engine import Engine
        from tidings.federated.device_sync import AdapterStack
        from tidings.models.registry import DEFAULT_MODEL, resolve_adapter, resolve_model

        self.dialogues = split_dialogues("validation")[:dialogues]
        self.threads = load_suite(SUITES["dev"])[:threads]
        self.model = resolve_model(DEFAULT_MODEL, Config().model.cache_dir)
        self.engine = Engine(self.model, EngineConfig(n_ctx=2048, n_threads=n_threads))
        self.stack = AdapterStack(self.engine)
        self.stack.set_task(resolve_adapter(TASK_ADAPTER, self.model))
        self.scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
        self.progress = progress
        self._candidates = 0

    def evaluate(self, gguf: Path | None) -> CandidateFigures:
        """The task adapter with this global adapter on top (None: the task adapter alone)."""
        from tidings.federated.device_sync import LocalVersion

        started = time.perf_counter()
        if gguf is None:
            self.stack.clear_global()
        else:
            self._candidates += 1  # a fresh name: a later candidate may reuse a path
            self.stack.set_global(LocalVersion(self._candidates, 0, Path(gguf), Path(gguf)))
        rouge = self._rouge()
        faithful, complete = self._faithfulness()
        return CandidateFigures(rouge_l=rouge, faithful_rate=faithful, complete_rate=complete,
                                dialogues=len(self.dialogues), threads=len(self.threads),
                                seconds=round(time.perf_counter() - started, 1))

    def _rouge(self) -> float:
        from tidings.device.config import SummarizerConfig
        from tidings.device.summary.summarizer import Summarizer

        summarizer = Summarizer(SummarizerConfig(), self.engine)
        scores = []
        for d in tqdm(self.dialogues, desc="gate: SAMSum validation", unit="dialogue", disable=not self.progress):
            text = " ".join(summarizer.model_summaries(list(d.messages), temperature=0.0)[0].split())
            scores.append(self.scorer.score(d.summary, text)["rougeL"].fmeasure)
        return 100 * statistics.fmean(scores) if scores else 0.0

    def _faithfulness(self) -> tuple[float, float]:
        from tidings.bench.faithfulness import WEARER, feed_lines, score
        from tidings.device.agent import announce_unread
        from tidings.device.config import SummarizerConfig
        from tidings.device.ingest import ingest_stream
        from tidings.device.store import Store
        from tidings.device.summary.summarizer import Summarizer
        from tidings.device.summary.wearer import Wearer

        if not self.threads:
            return 1.0, 1.0
        summarizer = Summarizer(SummarizerConfig(), self.engine, Wearer(WEARER))
        outputs: dict[str, dict] = {}
        feed = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in feed_lines(self.threads))
        with tempfile.TemporaryDirectory(prefix="tidings-gate-") as tmp, Store(Path(tmp) / "gate.db") as store:
            ingest_stream(store, io.BytesIO(feed.encode()), "gate")
            announce_unread(store, summarizer, lambda summary: outputs.__setitem__(summary.thread, summary.to_json()))
        scores = [score(thread, outputs.get(thread.id, {})) for thread in self.threads]
        return (statistics.fmean(s.faithful for s in scores), statistics.fmean(s.complete for s in scores))

    def close(self) -> None:
        self.engine.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tidings.bench.candidate_eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", type=Path, help="a global adapter GGUF (default: the task adapter alone)")
    parser.add_argument("--dialogues", type=int, default=65, help="SAMSum validation dialogues (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=40, help="wearer dev threads (default: %(default)s)")
    args = parser.parse_args(argv)
    evaluator = CandidateEvaluator(args.dialogues, args.threads, progress=True)
    try:
        figures = evaluator.evaluate(args.adapter)
    finally:
        evaluator.close()
    print(json.dumps(figures.to_json()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
