"""Personalization measured on what it is for: does the personal adapter predict this wearer's own replies?

    python -m tidings.bench.personalization_bench --out bench/results     # ~15 min on 2 idle cores (estimate)

Each virtual device is one wearer with a consistent way of writing. The
shared data has no person who writes many chats, so a wearer is made from
real SAMSum chats (the training split of samsum_validation.json; never the
test set, never the slice training holds out): in each of the device's chats
one participant who sends a short reply (at most 15 words, the length of a
suggestion) becomes the wearer, under the device's wearer name, and every
message the wearer sends carries the device's habit (`HABITS`: lower case
without full stops, a kiss at the end, a greeting by name, exclamation
marks). The words are the chat's own; the habit is the personal part.

Each device's replies are split 80/20 by a seeded shuffle. The personal
adapter is trained on the 80% exactly as `tidings federation personalize`
trains it on a device (federated/personal.py: PERSONAL_SPEC, PERSONAL_TRAINING,
`train_local`, on the task adapter merged into the base; no fleet version
below it, as on a device before its first round), and both models are
scored on the 20% they never saw:

* likelihood: mean negative log-likelihood per answer token of the reply the
  wearer actually sent, given the chat before it (PyTorch, the training
  base: the GGUF's weights dequantized, the task adapter merged);
* suggestion match: the device's reply drafts through llama.cpp
  (`Summarizer.model_replies`, the greedy draft first, then sampled ones,
  with the personal GGUF on top of the task adapter, AdapterStack.replying)
  against what the wearer sent: exactly the same words (case and punctuation
  aside), and "close" (ROUGE-L F1 at least 0.5).

It also measures summaries as if the personal adapter were stacked on them
(ROUGE-L on held-out SAMSum validation, faithful and complete on the wearer
dev suite, bench/candidate_eval.py): devices apply it to replies only, and
these figures are why.

Differences are paired per held-out reply, with a bootstrap 95% interval.
Writes OUT/personalization.json, OUT/personalization.png and the held-out
rows in OUT/personalization.jsonl; each device's figures are appended to
OUT/personalization.partial.jsonl, so a stopped run resumes at the next device.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from tqdm import tqdm

MAX_REPLY_WORDS = 15  # replies.MAX_OPTION_WORDS: what a suggestion can be
CLOSE = 0.5  # ROUGE-L F1 from which a suggestion says mostly what was sent
WEARER_NAMES = ("Robin", "Noor", "Kai", "Ines", "Tomas", "Yuki", "Lena", "Omar", "Priya", "Jonas")


def _lower(text: str, addressee: str) -> str:
    return re.sub(r"\.+(?=\s|$)", "", text.lower()).strip()


def _kiss(text: str, addressee: str) -> str:
    return f"{text.rstrip()} x"


def _greet(text: str, addressee: str) -> str:
    return f"Hey {addressee}! {text}" if addressee else f"Hey! {text}"


def _exclaim(text: str, addressee: str) -> str:
    text = re.sub(r"\.+(?=\s|$)", "!", text.strip())
    return text if text[-1:] in "!?" else f"{text}!"


HABITS: dict[str, Callable[[str, str], str]] = {"lowercase": _lower, "kiss": _kiss, "greets": _greet,
                                                "exclaims": _exclaim}


@dataclass(frozen=True)
class WearerReply:
    """One reply the wearer sent: the chat before it (as the device shows it to the model) and what they wrote."""

    id: str
    messages: tuple  # tuple[Message, ...], the chat up to the reply, the wearer's under their name
    reply: str


@dataclass(frozen=True)
class VirtualWearer:
    device: int
    name: str
    habit: str
    train: tuple[WearerReply, ...]
    held_out: tuple[WearerReply, ...]


def _first_name(sender: str) -> str:
    return sender.split()[0] if sender.split() else sender


def wearer_reply(dialogue, turn: int, name: str, habit: str) -> WearerReply:
    """The chat up to `turn` seen by its sender, renamed `name`, every message of theirs written with `habit`."""
    old = dialogue.messages[turn].sender
    mention = re.compile(rf"\b{re.escape(_first_name(old))}\b")
    write = HABITS[habit]
    shown = []
    for i, message in enumerate(dialogue.messages[: turn + 1]):
        text = mention.sub(name, message.text)
        if message.sender == old:
            addressee = next((_first_name(m.sender) for m in reversed(dialogue.messages[:i]) if m.sender != old), "")
            shown.append(replace(message, sender=name, text=write(" ".join(text.split()), addressee)))
        else:
            shown.append(replace(message, text=text))
    return WearerReply(f"{dialogue.id}@{turn}", tuple(shown[:-1]), shown[-1].text)


def chats(half: str) -> list:
    """SAMSum chats of the training split, halved by id: "tune" to choose settings on, "report" for the figures."""
    from tidings.federated.partitions import training_split

    parity = {"tune": 0, "report": 1}[half]
    return [d for d in training_split() if d.corpus == "samsum"
            and int(hashlib.sha256(d.id.encode()).hexdigest(), 16) % 2 == parity]


def virtual_wearers(devices: int, replies: int, half: str = "report", seed: int = 0,
                    held_share: float = 0.2) -> list[VirtualWearer]:
    """`devices` wearers, habits dealt in turn, each with `replies` replies from chats no other device has."""
    chats_left = chats(half)
    random.Random(seed).shuffle(chats_left)
    wearers, used = [], 0
    habits = list(HABITS)
    for device in range(devices):
        name, habit = WEARER_NAMES[device % len(WEARER_NAMES)], habits[device % len(habits)]
        rng = random.Random(seed * 1000 + device)
        mine: list[WearerReply] = []
        while len(mine) < replies:
            if used >= len(chats_left):
                raise ValueError(f"not enough SAMSum chats in the {half} half for {devices} devices x {replies} "
                                 "replies")
            dialogue = chats_left[used]
            used += 1
            if any(_first_name(m.sender) == name for m in dialogue.messages):
                continue
            turns = [i for i, m in enumerate(dialogue.messages)
                     if i >= 1 and m.sender != dialogue.messages[i - 1].sender
                     and len(m.text.split()) <= MAX_REPLY_WORDS]
            if turns:
                mine.append(wearer_reply(dialogue, rng.choice(turns), name, habit))
        cut = round(len(mine) * (1 - held_share))
        wearers.append(VirtualWearer(device, name, habit, tuple(mine[:cut]), tuple(mine[cut:])))
    return wearers


def reply_examples(wearer: VirtualWearer, replies: Sequence[WearerReply]):
    """The device's own training examples: the reply prompt as `Summarizer.model_replies` builds it."""
    from tidings.device.llm.prompts import render_dialogue, reply_prompt
    from tidings.federated.task import GEMMA
    from tidings.models.training.data import Example

    return [Example(r.id, "reply", reply_prompt(GEMMA, render_dialogue(r.messages), wearer.name), r.reply)
            for r in replies]


# -- the two measures -------------------------------------------------------------------------------------------------

def reply_nll(model, arms: dict[str, dict], examples) -> dict[str, list[tuple[float, int]]]:
    """Per arm (its arrays as the personal adapter on the training base): (summed NLL, answer tokens) per example.

    One copy of the base and one tokenization serve every arm: only the adapter's state changes between them.
    """
    import torch
    from peft import set_peft_model_state_dict

    from tidings.federated.personal import PERSONAL_SPEC
    from tidings.federated.task import GEMMA, tokenizer, training_base
    from tidings.models.training.train import (TrainConfig, answer_loss, answer_tokens, attach_lora,
                                               tokenize_examples)

    tok = tokenizer(str(model.path))
    tokenized, dropped = tokenize_examples(tok, examples, GEMMA.end_of_turn, max_tokens=10**6)
    assert not dropped
    peft_model = attach_lora(training_base(model), TrainConfig(
        rank=PERSONAL_SPEC.rank, alpha=PERSONAL_SPEC.alpha, target_modules=PERSONAL_SPEC.target_modules))
    peft_model.eval()
    scored = {}
    for arm, arrays in arms.items():
        set_peft_model_state_dict(peft_model, {k: torch.from_numpy(np.asarray(v, np.float32))
                                               for k, v in arrays.items()})
        with torch.no_grad():
            scored[arm] = [(answer_loss(peft_model, [e], tok.llm.token_eos()).item() * answer_tokens([e]),
                            answer_tokens([e])) for e in tokenized]
    return scored


def match_figures(drafts: Sequence[str], sent: str, scorer) -> dict:
    from tidings.device.summary.replies import same_words_key

    rouge = [scorer.score(sent, d)["rougeL"].fmeasure if d else 0.0 for d in drafts] or [0.0]
    return {"top_exact": bool(drafts) and same_words_key(drafts[0]) == same_words_key(sent),
            "any_exact": any(same_words_key(d) == same_words_key(sent) for d in drafts),
            "top_rouge_l": rouge[0], "top_close": rouge[0] >= CLOSE, "any_close": max(rouge) >= CLOSE}


class Drafter:
    """The device's reply drafts in llama.cpp: task adapter, plus a personal adapter when one is set."""

    def __init__(self, n_threads: int = 0) -> None:
        from tidings.device.config import Config, EngineConfig
        from tidings.device.llm.engine import Engine
        from tidings.federated.device_sync import AdapterStack
        from tidings.federated.task import TASK_ADAPTER
        from tidings.models.registry import DEFAULT_MODEL, resolve_adapter, resolve_model

        model = resolve_model(DEFAULT_MODEL, Config().model.cache_dir)
        self.engine = Engine(model, EngineConfig(n_ctx=2048, n_threads=n_threads))
        self.stack = AdapterStack(self.engine)
        self.stack.set_task(resolve_adapter(TASK_ADAPTER, model))

    def drafts(self, wearer: VirtualWearer, reply: WearerReply) -> list[str]:
        from tidings.device.config import SummarizerConfig
        from tidings.device.summary.summarizer import Summarizer
        from tidings.device.summary.wearer import Wearer

        summarizer = Summarizer(SummarizerConfig(), self.engine, Wearer(wearer.name))
        summarizer.reply_adapters = self.stack.replying  # as device/fleet.py wires it
        return summarizer.model_replies(list(reply.messages))

    def close(self) -> None:
        self.engine.close()


# -- the benchmark ----------------------------------------------------------------------------------------------------

def measure_device(wearer: VirtualWearer, drafter: Drafter, training, work: Path, scorer, summaries) -> dict:
    """`summaries`: a CandidateEvaluator measuring summaries with the personal adapter stacked on them too (None:
    skip). Devices do not stack it there (AdapterStack.replying); this is the evidence for that choice."""
    from tidings.federated.adapter import AdapterLayout, export_gguf
    from tidings.federated.personal import PERSONAL_SPEC
    from tidings.federated.task import embedded_model, hf_dir, train_local

    model = embedded_model()
    start = AdapterLayout.from_hf_dir(PERSONAL_SPEC, hf_dir(model)).initial(seed=1)
    started = time.perf_counter()
    trained = train_local(model, PERSONAL_SPEC, start, reply_examples(wearer, wearer.train), training,
                          work / f"device-{wearer.device}")
    train_seconds = time.perf_counter() - started
    held = reply_examples(wearer, wearer.held_out)
    nll = reply_nll(model, {"task": start, "personal": trained.arrays}, held)
    drafter.stack.clear_personal()
    drafts = {"task": [drafter.drafts(wearer, r) for r in wearer.held_out]}
    gguf = export_gguf(trained.arrays, PERSONAL_SPEC, work / f"personal-{wearer.device}.gguf")
    drafter.stack.set_personal(gguf, f"bench-{wearer.device}")
    drafts["personal"] = [drafter.drafts(wearer, r) for r in wearer.held_out]
    rows = []
    for i, reply in enumerate(wearer.held_out):
        row = {"device": wearer.device, "habit": wearer.habit, "id": reply.id, "sent": reply.reply}
        for arm in ("task", "personal"):
            row[f"{arm}_nll"], row["tokens"] = nll[arm][i]
            row[f"{arm}_drafts"] = drafts[arm][i]
            row.update({f"{arm}_{k}": v for k, v in match_figures(drafts[arm][i], reply.reply, scorer).items()})
        rows.append(row)
    return {"device": wearer.device, "name": wearer.name, "habit": wearer.habit, "train_replies": len(wearer.train),
            "trained_on": trained.num_examples, "steps": trained.steps, "train_loss": trained.loss,
            "train_seconds": round(train_seconds, 1),
            "summaries": summaries.evaluate(gguf).to_json() if summaries else None, "rows": rows}


def per_token(rows: Sequence[dict], arm: str) -> float:
    return sum(r[f"{arm}_nll"] for r in rows) / sum(r["tokens"] for r in rows)


def paired(rows: Sequence[dict], resamples: int = 2000, seed: int = 0) -> dict:
    """Personal - task, per held-out reply, with bootstrap 95% intervals (NLL per token: a ratio of sums)."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(len(rows), size=(resamples, len(rows)))
    task = np.array([r["task_nll"] for r in rows])
    personal = np.array([r["personal_nll"] for r in rows])
    tokens = np.array([r["tokens"] for r in rows])
    out = {"nll_per_token": _interval(float((personal.sum() - task.sum()) / tokens.sum()),
                                      (personal[picks].sum(1) - task[picks].sum(1)) / tokens[picks].sum(1))}
    for measure in ("top_exact", "any_exact", "top_close", "any_close", "top_rouge_l"):
        diffs = np.array([float(r[f"personal_{measure}"]) - float(r[f"task_{measure}"]) for r in rows])
        out[measure] = _interval(float(diffs.mean()), diffs[picks].mean(1))
    return out


def _interval(value: float, resampled: np.ndarray) -> dict:
    low, high = np.percentile(resampled, [2.5, 97.5])
    return {"difference": value, "ci95": [float(low), float(high)]}


def summarize(devices: Sequence[dict]) -> dict:
    rows = [r for d in devices for r in d["rows"]]

    def arm(name: str) -> dict:
        return {"nll_per_token": per_token(rows, name),
                **{m: statistics.fmean(float(r[f"{name}_{m}"]) for r in rows)
                   for m in ("top_exact", "any_exact", "top_close", "any_close", "top_rouge_l")}}

    by_habit = {h: {a: per_token([r for r in rows if r["habit"] == h], a) for a in ("task", "personal")}
                for h in sorted({r["habit"] for r in rows})}
    return {"held_out_replies": len(rows), "task": arm("task"), "personal": arm("personal"),
            "personal_minus_task": paired(rows), "nll_per_token_by_habit": by_habit}


def summary_check(task: dict | None, devices: Sequence[dict]) -> dict | None:
    """Summaries if each wearer's personal adapter were stacked on them too, against the task adapter alone."""
    if task is None:
        return None
    with_personal = [d["summaries"] for d in devices]
    return {"task": task, "personal_mean_rouge_l": statistics.fmean(s["rouge_l"] for s in with_personal),
            "personal_min_rouge_l": min(s["rouge_l"] for s in with_personal),
            "personal_min_faithful_rate": min(s["faithful_rate"] for s in with_personal),
            "personal_mean_complete_rate": statistics.fmean(s["complete_rate"] for s in with_personal),
            "data": "SAMSum validation, the slice training holds out (first N); wearer dev suite (first M)"}


def run(devices: int, replies: int, out: Path, half: str = "report", seed: int = 0, training=None,
        summary_dialogues: int = 20, summary_threads: int = 40) -> dict:
    """`training`: the personal adapter's LocalTraining (default: the device's, PERSONAL_TRAINING)."""
    from rouge_score import rouge_scorer

    from tidings.bench.candidate_eval import CandidateEvaluator
    from tidings.federated.personal import PERSONAL_SPEC, PERSONAL_TRAINING

    training = training or PERSONAL_TRAINING
    settings = {"devices": devices, "replies": replies, "half": half, "seed": seed, "training": asdict(training),
                "summary_dialogues": summary_dialogues, "summary_threads": summary_threads}
    out.mkdir(parents=True, exist_ok=True)
    partial = out / "personalization.partial.jsonl"
    done = _resumable(partial, settings)
    wearers = virtual_wearers(devices, replies, half, seed)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    drafter = Drafter()
    summaries = CandidateEvaluator(summary_dialogues, summary_threads) if summary_dialogues or summary_threads else None

    def keep(record: dict) -> dict:
        with open(partial, "a") as f:
            f.write(json.dumps({"settings": settings, **record}) + "\n")
        return record

    measured = []
    try:
        task_summaries = done.get(-1) or keep({"device": -1, "summaries": summaries.evaluate(None).to_json()
                                               if summaries else None})
        with tempfile.TemporaryDirectory(prefix="tidings-personal-") as tmp:
            for wearer in tqdm(wearers, desc="virtual wearers", unit="device"):
                if wearer.device in done:
                    measured.append(done[wearer.device])
                    continue
                result = keep(measure_device(wearer, drafter, training, Path(tmp), scorer, summaries))
                d = summarize([result])
                tqdm.write(f"device {wearer.device} ({wearer.habit}): NLL/token {d['task']['nll_per_token']:.3f} -> "
                           f"{d['personal']['nll_per_token']:.3f}, top draft close {d['task']['top_close']:.2f} -> "
                           f"{d['personal']['top_close']:.2f}")
                measured.append(result)
    finally:
        drafter.close()
        if summaries:
            summaries.close()
    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.machine(),
              **settings, "the_device_default": training == PERSONAL_TRAINING,
              "data": f"SAMSum validation, the {half} half of the training split (samsum_validation.json minus "
                      "the held-out slice); habits applied by rule (bench/personalization_bench.py HABITS)",
              "personal_spec": asdict(PERSONAL_SPEC), "close_rouge_l": CLOSE, **summarize(measured),
              "summaries": summary_check(task_summaries["summaries"], measured),
              "per_device": [{**{k: v for k, v in d.items() if k not in ("rows", "settings")},
                              "task_nll_per_token": per_token(d["rows"], "task"),
                              "personal_nll_per_token": per_token(d["rows"], "personal")} for d in measured]}
    with open(out / "personalization.jsonl", "w") as f:
        for d in measured:
            for row in d["rows"]:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    (out / "personalization.json").write_text(json.dumps(report, indent=2))
    plot(report, out / "personalization.png")
    return report


def _resumable(partial: Path, settings: dict) -> dict[int, dict]:
    """What a stopped run with the same settings measured; another run's records would mix two experiments."""
    done = {}
    if partial.is_file():
        for record in map(json.loads, partial.read_text().splitlines()):
            if record.get("settings") != settings:
                raise SystemExit(f"{partial} holds a run with other settings: remove it or pick another --out")
            done[record["device"]] = record
    return done


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    devices = report["per_device"]
    x = np.arange(len(devices))
    left.bar(x - 0.2, [d["task_nll_per_token"] for d in devices], 0.4, label="task adapter")
    left.bar(x + 0.2, [d["personal_nll_per_token"] for d in devices], 0.4, label="+ personal adapter")
    left.set_xticks(x, [f"{d['device']}\n{d['habit']}" for d in devices], fontsize=8)
    left.set_ylabel("NLL per token of held-out replies (lower is better)")
    left.set_title("Each wearer's own held-out replies")
    left.set_ylim(0, 1.25 * max(max(d["task_nll_per_token"], d["personal_nll_per_token"]) for d in devices))
    left.legend(fontsize=8, loc="upper left", ncols=2)
    measures = ("top_close", "any_close", "top_exact", "any_exact")
    y = np.arange(len(measures))
    right.barh(y + 0.2, [report["task"][m] for m in measures], 0.4, label="task adapter")
    right.barh(y - 0.2, [report["personal"][m] for m in measures], 0.4, label="+ personal adapter")
    right.set_yticks(y, ["top draft close", "any draft close", "top draft exact", "any draft exact"], fontsize=8)
    right.set_xlabel(f"share of {report['held_out_replies']} held-out replies (close: ROUGE-L F1 ≥ "
                     f"{report['close_rouge_l']})")
    right.set_title("Reply drafts against what was sent")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tidings.bench.personalization_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=8, help="virtual wearers (default: %(default)s)")
    parser.add_argument("--replies", type=int, default=30, help="replies per wearer, 80%% trained on "
                                                                "(default: %(default)s)")
    parser.add_argument("--half", choices=("tune", "report"), default="report",
                        help="which half of the chats: choose settings on 'tune', report on 'report' "
                             "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="which chats and turns (default: %(default)s)")
    parser.add_argument("--summary-dialogues", type=int, default=20,
                        help="held-out SAMSum validation dialogues to check summaries on (default: %(default)s)")
    parser.add_argument("--summary-threads", type=int, default=40,
                        help="wearer dev threads to check summaries on (default: %(default)s; both 0: no check)")
    parser.add_argument("--steps", type=int, help="personal training steps (default: the device's)")
    parser.add_argument("--learning-rate", type=float, help="personal training rate (default: the device's)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    from tidings.federated.personal import PERSONAL_TRAINING

    training = replace(PERSONAL_TRAINING, steps=args.steps or PERSONAL_TRAINING.steps,
                       learning_rate=args.learning_rate or PERSONAL_TRAINING.learning_rate)
    report = run(args.devices, args.replies, args.out, args.half, args.seed, training, args.summary_dialogues,
                 args.summary_threads)
    print(json.dumps({k: report[k] for k in ("held_out_replies", "task", "personal", "personal_minus_task")},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
