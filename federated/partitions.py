"""Non-IID virtual devices for the simulation, from the training splits in `../shared/data`.

Each device gets a skewed mix of the two corpora (Dirichlet over SAMSum chat
and DialogSum transcripts) and one of a few wearer styles that change what a
good answer is for it: some wearers keep whole summaries, some accept only
their first sentence, some mostly dictate replies. The held-out slice of the
recipe (`HOLDOUT`) never goes to a device: it is the evaluation set.
"""

from __future__ import annotations

import functools
import random
import re
from dataclasses import dataclass

import numpy as np

from tidings.device.llm.prompts import FORMATS
from tidings.models.training.data import HOLDOUT, Dialogue, Example, build_examples, split_holdout, training_dialogues

GEMMA = FORMATS["gemma"]
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class Style:
    name: str
    first_sentence_only: bool
    reply_share: float


STYLES = (Style("full", False, 0.3), Style("brief", True, 0.3), Style("replier", False, 0.9))


def styled(dialogue: Dialogue, style: Style) -> Dialogue:
    if not style.first_sentence_only:
        return dialogue
    first = _SENTENCE_END.split(dialogue.summary.strip(), maxsplit=1)[0]
    return Dialogue(dialogue.id, dialogue.corpus, dialogue.messages, first)


@functools.lru_cache(maxsize=4)
def _split(seed: int) -> tuple[tuple[Dialogue, ...], tuple[Dialogue, ...]]:
    train, held = split_holdout(training_dialogues(), HOLDOUT, seed)
    return tuple(train), tuple(held)


def training_split(seed: int = 0) -> list[Dialogue]:
    """The training dialogues devices are dealt: both corpora without the held-out slice."""
    return list(_split(seed)[0])


def held_out(seed: int = 0) -> list[Dialogue]:
    return list(_split(seed)[1])


def assignment(num_devices: int, seed: int = 0, concentration: float = 0.5) -> list[list[int]]:
    """Indices of training dialogues per device: each corpus dealt out by Dirichlet shares."""
    train = _split(seed)[0]
    rng = np.random.default_rng(seed)
    devices: list[list[int]] = [[] for _ in range(num_devices)]
    for corpus in sorted({d.corpus for d in train}):
        indices = [i for i, d in enumerate(train) if d.corpus == corpus]
        rng.shuffle(indices)
        shares = rng.dirichlet([concentration] * num_devices)
        cuts = (np.cumsum(shares)[:-1] * len(indices)).astype(int)
        for device, part in enumerate(np.split(np.array(indices), cuts)):
            devices[device] += part.tolist()
    for device, part in enumerate(devices):  # nobody is left without data
        if not part:
            part.append(int(rng.integers(len(train))))
    return devices


def device_style(partition_id: int) -> Style:
    return STYLES[partition_id % len(STYLES)]


def device_examples(partition_id: int, num_partitions: int, seed: int = 0) -> list[Example]:
    train = _split(seed)[0]
    style = device_style(partition_id)
    dialogues = [styled(train[i], style) for i in assignment(num_partitions, seed)[partition_id]]
    return build_examples(GEMMA, dialogues, reply_share=style.reply_share, seed=seed + partition_id)


def pooled_examples(num_partitions: int, seed: int = 0) -> list[Example]:
    """Every device's data in one place: what central training on the same data sees."""
    pooled = [e for p in range(num_partitions) for e in device_examples(p, num_partitions, seed)]
    random.Random(seed).shuffle(pooled)
    return pooled
