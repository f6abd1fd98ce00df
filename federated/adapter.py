"""The federated adapter: a small LoRA trained on top of the frozen task adapter.

The shipped task adapter (r16 on every linear layer, 7.6 MB) is far too big to
upload every round, so it stays fixed on every device and the fleet trains a
small LoRA beside it: rank 2 on the attention's q and v projections of all
layers. LoRA is additive, so training it on a base with the task adapter
merged in is the same model llama.cpp runs with both adapters active at scale 1.

FFA-LoRA (Sun et al., "Improving LoRA in Privacy-preserving Federated
Learning", ICLR 2024): every device keeps A at the same seeded start and
trains only B. The mean of the devices' B under one shared A is exactly the
mean of their updates B·A (averaging A and B separately is not), the DP noise
lands on one factor instead of two, and only B travels: 46,080 values, which
SecAgg+ sends as int64 (0.37 MB per device per round; plain LoRA at rank 4
would be 1.47 MB).

Arrays travel by name (PEFT state-dict keys) in a fixed sorted order; the
server checks names and shapes against the layout's fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# PEFT module name -> (input size, output size) as functions of the HF config.
_MODULE_SHAPES = {
    "q_proj": lambda c: (c["hidden_size"], c["num_attention_heads"] * c["head_dim"]),
    "k_proj": lambda c: (c["hidden_size"], c["num_key_value_heads"] * c["head_dim"]),
    "v_proj": lambda c: (c["hidden_size"], c["num_key_value_heads"] * c["head_dim"]),
    "o_proj": lambda c: (c["num_attention_heads"] * c["head_dim"], c["hidden_size"]),
    "gate_proj": lambda c: (c["hidden_size"], c["intermediate_size"]),
    "up_proj": lambda c: (c["hidden_size"], c["intermediate_size"]),
    "down_proj": lambda c: (c["intermediate_size"], c["hidden_size"]),
}
_PARENT = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
           "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class AdapterSpec:
    """Which LoRA the fleet trains (the same for the global and the personal adapter kinds)."""

    rank: int = 2
    alpha: float = 4.0
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    frozen_a: bool = True  # FFA-LoRA: A fixed at its seeded start, only B trained and sent


@dataclass(frozen=True)
class AdapterLayout:
    """Names and shapes of one adapter's arrays; `shapes` are those that travel, in transmission order."""

    spec: AdapterSpec
    all_shapes: tuple[tuple[str, tuple[int, ...]], ...]

    @classmethod
    def for_model(cls, spec: AdapterSpec, hf_config: Mapping) -> AdapterLayout:
        shapes = []
        for layer in range(hf_config["num_hidden_layers"]):
            for module in spec.target_modules:
                n_in, n_out = _MODULE_SHAPES[module](hf_config)
                prefix = f"base_model.model.model.layers.{layer}.{_PARENT[module]}.{module}"
                shapes.append((f"{prefix}.lora_A.weight", (spec.rank, n_in)))
                shapes.append((f"{prefix}.lora_B.weight", (n_out, spec.rank)))
        return cls(spec, tuple(sorted(shapes)))

    @property
    def shapes(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        if self.spec.frozen_a:
            return tuple((name, shape) for name, shape in self.all_shapes if ".lora_B." in name)
        return self.all_shapes

    @classmethod
    def from_hf_dir(cls, spec: AdapterSpec, hf_dir: Path) -> AdapterLayout:
        return cls.for_model(spec, json.loads((Path(hf_dir) / "config.json").read_text()))

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.shapes]

    @property
    def size(self) -> int:
        return sum(math.prod(shape) for _, shape in self.shapes)

    @property
    def fingerprint(self) -> str:
        """Identifies names, shapes and order: a client and the server agree on it or the update is refused."""
        text = json.dumps([[n, list(s)] for n, s in self.shapes] + (["frozen A"] if self.spec.frozen_a else []))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def initial(self, seed: int = 0) -> Arrays:
        """PEFT's own start: A Kaiming-uniform, B zero, so version 0 changes nothing.

        A frozen A is the same on every device and every version: drawn from seed 0 whatever `seed` says.
        """
        rng = np.random.default_rng(0 if self.spec.frozen_a else seed)
        arrays = {}
        for name, shape in self.all_shapes:
            if ".lora_A." in name:
                bound = 1.0 / math.sqrt(shape[1])
                arrays[name] = rng.uniform(-bound, bound, shape).astype(np.float32)
            else:
                arrays[name] = np.zeros(shape, np.float32)
        return arrays

    def to_list(self, arrays: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return [np.asarray(arrays[name], np.float32) for name in self.names]

    def from_list(self, values: list[np.ndarray]) -> Arrays:
        """The whole adapter from the arrays that travelled (a frozen A joins them from its seed)."""
        if len(values) != len(self.shapes):
            raise ValueError(f"expected {len(self.shapes)} arrays, got {len(values)}")
        fixed = {name: v for name, v in self.initial().items() if ".lora_A." in name} if self.spec.frozen_a else {}
        return fixed | {name: np.asarray(v) for name, v in zip(self.names, values)}

    def problems(self, values: list[np.ndarray]) -> str | None:
        """Why these arrays are not an adapter of this layout (count, shape, dtype, NaN/Inf), or None."""
        if len(values) != len(self.shapes):
            return f"{len(values)} arrays instead of {len(self.shapes)}"
        for (name, shape), value in zip(self.shapes, values):
            if tuple(value.shape) != shape:
                return f"{name}: shape {tuple(value.shape)} instead of {shape}"
            if not np.issubdtype(value.dtype, np.floating):
                return f"{name}: dtype {value.dtype} is not floating point"
            if not np.isfinite(value).all():
                return f"{name}: contains NaN or Inf"
        return None


def update_norm(new: list[np.ndarray], old: list[np.ndarray]) -> float:
    """L2 norm of the whole update, all arrays flattened together (what DP clipping bounds)."""
    return float(math.sqrt(sum(float(np.sum((n.astype(np.float64) - o) ** 2)) for n, o in zip(new, old))))


def save_arrays(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """npz with the names as keys (written by the caller atomically)."""
    with open(path, "wb") as f:
        np.savez(f, **{name: np.asarray(v, np.float32) for name, v in arrays.items()})


def load_arrays(path: Path) -> Arrays:
    with np.load(path) as data:
        return {name: data[name] for name in data.files}


def export_gguf(arrays: Mapping[str, np.ndarray], spec: AdapterSpec, path: Path) -> Path:
    """The adapter as a llama.cpp LoRA (f16), next to the task adapter on the device."""
    from tidings.models.lora_gguf import gguf_tensor_name, write_lora_gguf

    tensors = {gguf_tensor_name(name): np.asarray(value, np.float32) for name, value in arrays.items()}
    return write_lora_gguf(path, architecture="gemma3", alpha=spec.alpha, tensors=tensors, dtype=np.float16)
