"""The base GGUF as a PyTorch model, for training adapters.

transformers dequantizes the GGUF to fp32 (slow: it parses the 262k-token
vocabulary in Python, minutes on two cores). The result is cached once as
safetensors beside the model cache, keyed by the GGUF's sha256, so later runs
start in seconds. Text is tokenized with llama.cpp's own tokenizer instead of
transformers' (see `tokens.py`), so the cache holds no tokenizer.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from tidings.models.registry import ModelError, ModelFile, sha256_file

log = logging.getLogger("tidings")


def hf_cache_dir(model: ModelFile, cache_dir: Path) -> Path:
    return cache_dir / f"{model.name.removesuffix('.gguf')}-hf"


def _gguf_sha256(model: ModelFile) -> str:
    return model.spec.sha256 if model.spec else sha256_file(model.path)


def ensure_hf_base(model: ModelFile, cache_dir: Path) -> Path:
    """A directory with config.json and model.safetensors for `model`, converted once."""
    out = hf_cache_dir(model, cache_dir)
    stamp = out / "tidings-source.json"
    source = {"gguf": model.path.name, "sha256": _gguf_sha256(model)}
    if stamp.exists() and json.loads(stamp.read_text()) == source:
        return out
    log.warning("converting %s to PyTorch once (a few minutes); cached in %s", model.path.name, out)
    loaded = AutoModelForCausalLM.from_pretrained(str(model.path.parent), gguf_file=model.path.name,
                                                  dtype=torch.float32)
    # A model loaded from GGUF refuses save_pretrained ("quantized with gguf");
    # a fresh model of the same config holding the dequantized weights does not.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = type(loaded)(config)
    fresh.load_state_dict(loaded.state_dict())
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    fresh.save_pretrained(tmp)
    (tmp / stamp.name).write_text(json.dumps(source))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def load_hf_base(model: ModelFile, cache_dir: Path) -> torch.nn.Module:
    if model.lean:
        raise ModelError(f"{model.name} is a lean-vocabulary model: train on its base model {model.lean.base}; "
                         f"its adapters apply to the lean model unchanged")
    path = ensure_hf_base(model, cache_dir)
    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, attn_implementation="sdpa")
