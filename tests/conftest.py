"""Shared fixtures: the real embedded model through llama.cpp, and tiny LoRA files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tidings.device.config import Config, EngineConfig
from tidings.device.llm.engine import Engine
from tidings.models.lora_gguf import write_lora_gguf
from tidings.models.registry import DEFAULT_MODEL, ModelFile, resolve_model

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def embedded_model() -> ModelFile:
    return resolve_model(DEFAULT_MODEL, Config().model.cache_dir)


@pytest.fixture(scope="session")
def engine(embedded_model: ModelFile):
    with Engine(embedded_model, EngineConfig(n_ctx=1024, n_threads=2)) as engine:
        yield engine


def random_lora(path: Path, *, seed: int, rank: int = 4, std: float = 0.02, layers: int = 18,
                q_out: int = 1024, v_out: int = 256, n_embd: int = 640, alpha: float = 4.0) -> Path:
    """A random LoRA on attn_q and attn_v of every Gemma 3 270M block, big enough to change greedy text."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in range(layers):
        for name, out in (("attn_q", q_out), ("attn_v", v_out)):
            tensors[f"blk.{layer}.{name}.weight.lora_a"] = rng.normal(0, std, (rank, n_embd))
            tensors[f"blk.{layer}.{name}.weight.lora_b"] = rng.normal(0, std * 50, (out, rank))
    return write_lora_gguf(path, architecture="gemma3", alpha=alpha, tensors=tensors)
