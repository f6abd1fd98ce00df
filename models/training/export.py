"""PEFT LoRA -> llama.cpp GGUF adapter."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from peft import get_peft_model_state_dict
from safetensors.torch import load_file

from tidings.models.lora_gguf import gguf_tensor_name, write_lora_gguf


def export_state_dict(state: dict[str, torch.Tensor], *, alpha: float, architecture: str, path: Path,
                      dtype: type = np.float16) -> Path:
    tensors = {gguf_tensor_name(key): value.detach().float().cpu().numpy() for key, value in state.items()}
    return write_lora_gguf(path, architecture=architecture, alpha=alpha, tensors=tensors, dtype=dtype)


def export_peft_model(peft_model: torch.nn.Module, path: Path, architecture: str = "gemma3",
                      dtype: type = np.float16) -> Path:
    config = peft_model.peft_config["default"]
    return export_state_dict(get_peft_model_state_dict(peft_model), alpha=config.lora_alpha,
                             architecture=architecture, path=path, dtype=dtype)


def export_peft_dir(peft_dir: Path, path: Path, architecture: str = "gemma3", dtype: type = np.float16) -> Path:
    """Convert a saved PEFT adapter directory (adapter_config.json + adapter_model.safetensors)."""
    config = json.loads((peft_dir / "adapter_config.json").read_text())
    if config.get("use_rslora") or config.get("use_dora"):
        raise ValueError("rsLoRA and DoRA adapters do not map onto llama.cpp's LoRA scaling")
    state = load_file(peft_dir / "adapter_model.safetensors")
    return export_state_dict(state, alpha=config["lora_alpha"], architecture=architecture, path=path, dtype=dtype)
