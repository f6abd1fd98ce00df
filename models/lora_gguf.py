"""Write LoRA adapters in llama.cpp's GGUF adapter format.

Layout (what llama.cpp's `llama_adapter_lora_init` reads): `general.type =
adapter`, `adapter.type = lora`, `adapter.lora.alpha`, and for each adapted
weight two tensors `blk.N.<tensor>.weight.lora_a` with numpy shape (rank, in)
and `...lora_b` with shape (out, rank): PEFT's own A and B, untransposed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import gguf
import numpy as np

# PEFT module names inside a transformers decoder layer, and llama.cpp's.
PEFT_TO_GGUF = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_PEFT_KEY = re.compile(r"layers\.(\d+)\.(.+)\.lora_([AB])(?:\.default)?\.weight$")


def gguf_tensor_name(peft_key: str) -> str:
    """`base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight` -> `blk.3.attn_q.weight.lora_a`."""
    match = _PEFT_KEY.search(peft_key)
    if not match or match.group(2) not in PEFT_TO_GGUF:
        raise ValueError(f"not a LoRA weight of a known decoder module: {peft_key}")
    layer, module, which = match.groups()
    return f"blk.{layer}.{PEFT_TO_GGUF[module]}.weight.lora_{which.lower()}"


def write_lora_gguf(path: Path, *, architecture: str, alpha: float, tensors: Mapping[str, np.ndarray],
                    dtype: type = np.float32) -> Path:
    """Write `tensors` (GGUF names -> float arrays) as a LoRA adapter, atomically.

    `np.float16` halves the file; llama.cpp applies either at the same speed.
    """
    path = Path(path)
    pairs = {name.rsplit(".lora_", 1)[0] for name in tensors}
    for base in sorted(pairs):
        a, b = tensors.get(f"{base}.lora_a"), tensors.get(f"{base}.lora_b")
        if a is None or b is None:
            raise ValueError(f"{base}: needs both lora_a and lora_b")
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise ValueError(f"{base}: lora_a {a.shape} and lora_b {b.shape} do not share a rank")
    tmp = path.with_name(path.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), arch=architecture)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    for name in sorted(tensors):
        writer.add_tensor(name, np.ascontiguousarray(tensors[name], dtype=dtype))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, path)
    return path
