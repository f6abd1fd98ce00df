"""Run settings of a federation: one typed object, from Flower's run config or the device config.

Flower run-config keys are the field names with dashes (`local-steps`);
`tidings.toml` [federation] documents the same keys with underscores.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path


@dataclass(frozen=True)
class FederationSettings:
    state_dir: str = "federation-state"
    # The total number of global rounds: a resumed run does only those still missing.
    rounds: int = 2
    clients_per_round: int = 3
    min_available: int = 3
    # Devices that could have been sampled: the sampling rate for the privacy accounting is
    # clients_per_round / population (0: the number of connected nodes).
    population: int = 0
    round_timeout: float = 600.0
    # The adapter the fleet trains (see tidings.federated.adapter).
    rank: int = 2
    alpha: float = 4.0
    modules: str = "q_proj,v_proj"
    frozen_a: bool = True  # FFA-LoRA: only B is trained and sent
    # Local training on each device.
    local_steps: int = 2
    learning_rate: float = 2e-3
    batch_tokens: int = 1024
    max_seq_tokens: int = 384
    max_examples: int = 64
    threads: int = 0
    # Upload protection.
    secagg: bool = True
    secagg_shares: int = 3
    secagg_threshold: int = 2
    dp: bool = True
    # Central DP's noise on the mean (std z*C/m) wrecks the adapter below this many devices per
    # round (bench/dp_utility.py); there DP is not applied, with a warning, and ε is infinite.
    dp_min_clients: int = 1000
    noise_multiplier: float = 1.0
    clipping_norm: float = 1.0
    delta: float = 1e-5
    compression: str = "int8"  # without SecAgg+: "none", "fp16" or "int8"
    # The quality gate (quality_gate.py): a candidate is published only within these of its references.
    gate: bool = True
    gate_dialogues: int = 65  # SAMSum validation dialogues training holds out (65: all of them)
    gate_threads: int = 40  # wearer dev suite threads
    gate_rouge_tolerance: float = 2.0  # over the ±1.5 points any small change moves ROUGE-L on 65 (dp_utility)
    gate_faithful_tolerance: float = 0.0
    gate_complete_tolerance: float = 0.05
    # Largest accepted update norm when DP is off (with DP the clipping norm is the bound).
    max_update_norm: float = 20.0
    seed: int = 0

    @classmethod
    def from_run_config(cls, run_config: dict) -> FederationSettings:
        known = {f.name: f for f in fields(cls)}
        values = {}
        for key, value in run_config.items():
            name = key.replace("-", "_")
            if name not in known:
                raise ValueError(f"unknown federation setting {key!r}")
            values[name] = type(getattr(cls(), name))(value)
        return cls(**values)

    def to_run_config(self) -> dict:
        return {key.replace("_", "-"): value for key, value in asdict(self).items()}

    def run_config_arg(self) -> str:
        """For `flwr run --run-config`: space-separated key=value in TOML syntax."""
        parts = []
        for key, value in self.to_run_config().items():
            literal = (str(value).lower() if isinstance(value, bool) else
                       f'"{value}"' if isinstance(value, str) else repr(value))
            parts.append(f"{key}={literal}")
        return " ".join(parts)

    def with_(self, **changes) -> FederationSettings:
        return replace(self, **changes)

    @property
    def dp_applied(self) -> bool:
        return self.dp and self.clients_per_round >= self.dp_min_clients

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir).expanduser().resolve()
