"""Training and evaluation examples from the shared dialogue-summarization data.

`../shared/data` (beside the repository) holds SAMSum and DialogSum. Training
and tuning use `samsum_validation.json` and `dialogsum_dev.jsonl`, with a fixed
held-out slice for validation; `samsum_test.json` is only ever read by the
benchmark for the reported number.

Every dialogue becomes `Message`s and goes through the same prompt builder the
device uses (`tidings.device.llm.prompts`), so training sees exactly the prompts
that inference will.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from tidings.device.messages import Message
from tidings.device.llm.prompts import Prompt, PromptFormat, render_dialogue, reply_prompt, summary_prompt

# The repository's sibling `shared/data`, unless $TIDINGS_DATA_DIR says otherwise.
DATA_DIR = Path(os.environ.get("TIDINGS_DATA_DIR", Path(__file__).resolve().parents[2].parent / "shared" / "data"))
# The share of each training corpus held out of training (a fixed seeded slice): for validation and tuning.
HOLDOUT = 0.08
_TURN = re.compile(r"^([^:]{1,60}):\s?(.*)$")
_T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Dialogue:
    id: str
    corpus: str  # "samsum" or "dialogsum"
    messages: tuple[Message, ...]
    summary: str


@dataclass(frozen=True)
class Example:
    """One training pair: the prompt, and the answer the loss is taken on."""

    id: str
    task: str  # "summary", "wearer-summary" or "reply"
    prompt: Prompt
    answer: str
    # Wrong answers to train against (the wrong person, a flipped negation, a superseded value).
    negatives: tuple[str, ...] = ()


def dialogue_messages(dialogue_id: str, text: str) -> tuple[Message, ...]:
    """`Name: text` lines as messages; a line without a speaker continues the previous turn."""
    messages: list[Message] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            continue
        match = _TURN.match(line.strip())
        if match and match.group(2).strip():
            sender, said = match.group(1).strip(), match.group(2).strip()
            messages.append(Message(f"{dialogue_id}-{len(messages)}", dialogue_id, sender, said,
                                    _T0 + timedelta(minutes=len(messages))))
        elif messages:
            last = messages[-1]
            messages[-1] = Message(last.id, last.thread, last.sender, f"{last.text} {line.strip()}", last.sent_at)
    return tuple(messages)


def load_samsum(path: Path) -> list[Dialogue]:
    records = json.loads(Path(path).read_text(encoding="utf-8"))
    return [Dialogue(str(r["id"]), "samsum", dialogue_messages(str(r["id"]), r["dialogue"]), r["summary"].strip())
            for r in records]


def load_dialogsum(path: Path) -> list[Dialogue]:
    dialogues = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            r = json.loads(line)
            dialogues.append(Dialogue(r["fname"], "dialogsum", dialogue_messages(r["fname"], r["dialogue"]),
                                      r["summary"].strip()))
    return dialogues


def training_dialogues(data_dir: Path = DATA_DIR) -> list[Dialogue]:
    """The two training splits; never the SAMSum test set."""
    found = load_samsum(data_dir / "samsum_validation.json") + load_dialogsum(data_dir / "dialogsum_dev.jsonl")
    return [d for d in found if d.messages]


def split_holdout(dialogues: Sequence[Dialogue], fraction: float, seed: int) -> tuple[list[Dialogue], list[Dialogue]]:
    """(train, held out): a fixed random slice, stratified by corpus."""
    train: list[Dialogue] = []
    held: list[Dialogue] = []
    for corpus in sorted({d.corpus for d in dialogues}):
        group = sorted((d for d in dialogues if d.corpus == corpus), key=lambda d: d.id)
        random.Random(seed).shuffle(group)
        cut = round(len(group) * fraction)
        held += group[:cut]
        train += group[cut:]
    return train, held


def summary_example(fmt: PromptFormat, dialogue: Dialogue) -> Example:
    return Example(dialogue.id, "summary", summary_prompt(fmt, render_dialogue(dialogue.messages)), dialogue.summary)


def reply_example(fmt: PromptFormat, dialogue: Dialogue, rng: random.Random) -> Example | None:
    """The next turn of a dialogue, written as its sender, given the turns before it."""
    candidates = [i for i, m in enumerate(dialogue.messages)
                  if i >= 1 and m.sender != dialogue.messages[i - 1].sender and 2 <= len(m.text.split()) <= 30]
    if not candidates:
        return None
    turn = rng.choice(candidates)
    reply = dialogue.messages[turn]
    prompt = reply_prompt(fmt, render_dialogue(dialogue.messages[:turn]), reply.sender)
    return Example(f"{dialogue.id}@{turn}", "reply", prompt, " ".join(reply.text.split()))


def build_examples(fmt: PromptFormat, dialogues: Sequence[Dialogue], *, reply_share: float, seed: int) -> list[Example]:
    """A summary example per dialogue, plus reply examples for `reply_share` of them."""
    rng = random.Random(seed)
    examples = [summary_example(fmt, d) for d in dialogues]
    for dialogue in dialogues:
        if rng.random() < reply_share and (example := reply_example(fmt, dialogue, rng)):
            examples.append(example)
    rng.shuffle(examples)
    return examples
