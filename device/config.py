"""The one configuration object, loaded from one TOML file.

Every field has a default that works on the embedded model, so an empty file
(or none at all) is a valid configuration. `tidings.toml` at the repository
root documents every key. Unknown keys are an error rather than silently
ignored: a typo in a device's config should not quietly change its behaviour.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, get_type_hints


def _data_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "tidings"


def _cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tidings"


@dataclass(frozen=True)
class ModelConfig:
    # A name from models/manifest.toml, or a path to any GGUF file. The default
    # is the embedded Gemma 3 270M with its output layer cut to 32k tokens: twice
    # the decoding speed, and on the SAMSum test the same summary for 96.5% of
    # dialogues and the same ROUGE-L (bench/lean_eval.py, models/lean/).
    name: str = "gemma3-270m-q4_k_m-lean32k"
    cache_dir: Path = field(default_factory=lambda: _cache_home() / "models")
    # The LoRA task adapter that teaches the base model to summarize: a shipped
    # adapter's name (models/manifest.toml) or a GGUF path; empty means none,
    # and summaries then come from the extractive path.
    task_adapter: str = "tidings-task"
    task_adapter_scale: float = 1.0


@dataclass(frozen=True)
class EngineConfig:
    n_ctx: int = 2048
    # 0 means one thread per available core.
    n_threads: int = 0
    n_batch: int = 512
    seed: int = 0
    # Memory-map the GGUF (true) or read it into memory (false). llama.cpp
    # repacks most weights for the CPU while loading; a mapped file keeps the
    # original pages resident beside the repacked copy (measured: 12 MB more
    # for the lean model, 14 MB for the full one, same load time).
    use_mmap: bool = False
    # How a lean-vocabulary model reads input tokens it lacks: "exact" (from
    # the base model's embedding rows: the full model's input, bit for bit)
    # or "spelled" (as smaller kept tokens of the same text).
    lean_input: str = "exact"
    # The widest beam search the context keeps sequences for ([summarizer] summary_beams).
    max_beams: int = 4

    def __post_init__(self) -> None:
        if self.lean_input not in ("exact", "spelled"):
            raise ConfigError(f'engine.lean_input must be "exact" or "spelled", got {self.lean_input!r}')
        if self.max_beams < 1:
            raise ConfigError(f"engine.max_beams must be at least 1, got {self.max_beams}")


@dataclass(frozen=True)
class WearerConfig:
    # The wearer's name as senders and others write it. With a name, the wearer's
    # own messages are theirs (never announced back, never owed a reply) and
    # summaries address the wearer as "you"; without one they stay in the third person.
    name: str = ""
    # Other names the wearer goes by (nicknames, handles), e.g. ["Al", "@alex:example.org"].
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class SummarizerConfig:
    max_summary_tokens: int = 96
    max_summary_words: int = 60
    # A thread whose unread messages are about as short as a summary is read out as written.
    # Said to a wearer, a summary must carry who asks what of them: on the faithfulness dev
    # suite reading threads of up to 60 words raised complete summaries from 50% to 72.5%
    # (README, "Faithfulness"). A third-person summary is shorter (SAMSum's average 20 words),
    # and so is what reading it out verbatim can stand in for.
    verbatim_max_words: int = 60
    verbatim_max_words_no_wearer: int = 20
    # The fallback's word budget said to a wearer, measured on the five tuning suites (135 threads,
    # 2026-12-02): 45 words 133 faithful / 103 complete, 60 words 133 / 110, 75 words 133 / 117 (with
    # the rules of that day). With no wearer it stays at 45, near what a third-person summary is.
    fallback_max_words: int = 75
    fallback_max_words_no_wearer: int = 45
    # Whether a summary said to a wearer may be the model's draft. The shipped task adapter was trained on
    # third-person summaries: on the six wearer suites (155 threads, 2026-12-02) the 5 of its drafts that
    # passed every check were none of them complete, and 3 said what the thread does not ("Tante Roswitha
    # will have a pizza"; "Jovana will join you and Konstantin" when Konstantin can't come), so said to a
    # wearer the fallback speaks instead. An adapter that earns it on the benchmark turns this on.
    model_drafts_for_wearer: bool = False
    # Messages beyond this many prompt tokens are folded into a rolling summary.
    context_budget_tokens: int = 1400
    retries: int = 1
    suggestions: int = 3
    # Beam search for summaries made whole before they are spoken or shown (announcements,
    # `tidings summarize`): on the held-out SAMSum chats 4 beams scored ROUGE-L 38.6 against
    # greedy's 37.3 in 1.6x the time (models/adapters/tidings-task/README.md). A summary read
    # out while it is generated (the voice loop) stays greedy: it speaks before the rest
    # exists. 1 turns beam search off.
    summary_beams: int = 4
    # Beam scores are log-probability / length**penalty: above 1 favours longer summaries.
    summary_length_penalty: float = 2.0

    def __post_init__(self) -> None:
        if self.summary_beams < 1:
            raise ConfigError(f"summarizer.summary_beams must be at least 1, got {self.summary_beams}")


@dataclass(frozen=True)
class StoreConfig:
    path: Path = field(default_factory=lambda: _data_home() / "tidings.db")


@dataclass(frozen=True)
class IngestConfig:
    http_host: str = "127.0.0.1"
    http_port: int = 8765


@dataclass(frozen=True)
class VoiceConfig:
    # "hibari" (natural voice) or "espeak" (robotic, lighter); without the
    # hibari-tts package Tidings falls back to espeak-ng and says so.
    tts_engine: str = "hibari"
    # Only hibari's "heart" ships in its package; the others would download.
    voice: str = "heart"
    # Substrings of sound device names; empty means the system default.
    microphone: str = ""
    speaker: str = ""
    stt_threads: int = 2
    # Whisper's beam width: on a short utterance the encoder costs most, so beams are cheap.
    stt_beam_size: int = 5
    # Silero speech probability that starts an utterance.
    vad_threshold: float = 0.5
    # Silence that ends an utterance.
    vad_hangover_ms: int = 700
    # Recognize a dictation as following the newest messages of the thread it answers: a reply repeats
    # their names and numbers, which a small recognizer mishears (voice bench: WER and dictations).
    prime_dictation: bool = True


@dataclass(frozen=True)
class MatrixConfig:
    # The wearer's account: `tidings connect matrix` logs in once and keeps the
    # access token in `credentials` (file mode 0600); the password is never stored.
    homeserver: str = ""  # e.g. "https://matrix.example.org"
    user_id: str = ""  # e.g. "@alex:example.org"
    credentials: Path = field(default_factory=lambda: _data_home() / "matrix" / "credentials.json")
    # End-to-end encrypted rooms: read and answered with this device's own keys (kept in `keys_dir`,
    # mode 0700). Off: their messages are skipped with a log line and replies to them refused.
    encryption: bool = True
    keys_dir: Path = field(default_factory=lambda: _data_home() / "matrix" / "keys")
    device_name: str = "Tidings"
    # `tidings listen` also connects (same as --matrix).
    listen: bool = False
    # How long one sync waits on the homeserver for new events (long polling).
    sync_timeout_ms: int = 30000
    # Delivery retries back off from `retry_min_seconds` doubling up to `retry_max_seconds`.
    retry_min_seconds: float = 1.0
    retry_max_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.homeserver and not self.homeserver.startswith(("http://", "https://")):
            raise ConfigError(f'matrix.homeserver must be a URL ("https://..."), got {self.homeserver!r}')
        if self.user_id and not (self.user_id.startswith("@") and ":" in self.user_id):
            raise ConfigError(f'matrix.user_id must look like "@name:server", got {self.user_id!r}')


@dataclass(frozen=True)
class FederationConfig:
    # Operator: where the server keeps the global adapter's versions, round
    # log, certificates and logs, and the address it serves on.
    state_dir: Path = field(default_factory=lambda: _data_home() / "federation")
    host: str = "127.0.0.1"
    port: int = 39400  # the SuperLink (rounds)
    registry_port: int = 39450  # the HTTPS registry (versions devices download)
    # Device: the operator's SuperLink (HOST:PORT) and registry (https://HOST:PORT,
    # or a directory; empty: state_dir on this machine), and where this device's
    # SuperNode listens for its own ClientApp processes.
    superlink: str = ""
    registry: str = ""
    device_host: str = "127.0.0.1"
    device_port: int = 39500
    poll_seconds: float = 300.0  # how often `join` asks the registry for a new version
    rounds: int = 2
    clients_per_round: int = 3
    local_steps: int = 2
    learning_rate: float = 0.002
    secagg: bool = True
    dp: bool = True
    dp_min_clients: int = 1000  # below it DP's noise wrecks the adapter: not applied, ε infinite
    noise_multiplier: float = 1.0
    clipping_norm: float = 1.0
    delta: float = 1e-05
    epsilon_budget: float = 8.0  # the ε the operator will spend in all: the dashboard shows ε against it
    compression: str = "int8"
    # The quality gate: a round's adapter reaches devices only if it does not regress on
    # held-out SAMSum validation (ROUGE-L points) and the wearer dev suite (shares).
    gate: bool = True
    gate_dialogues: int = 65
    gate_threads: int = 40
    gate_rouge_tolerance: float = 2.0
    gate_faithful_tolerance: float = 0.0
    gate_complete_tolerance: float = 0.05
    # Canary rollout (operator): a new version goes to this share of devices first, and is promoted
    # or rolled back once both it and the promoted version have this many summaries reported.
    canary_fraction: float = 0.2
    canary_min_summaries: int = 200
    canary_tolerance: float = 0.05
    # On-device training data: the newest examples kept, and their maximum age.
    keep_examples: int = 500
    max_age_days: float = 90.0
    # Adapter scales on the device, beside the task adapter.
    global_scale: float = 1.0
    personal_scale: float = 1.0


@dataclass(frozen=True)
class Config:
    wearer: WearerConfig = field(default_factory=WearerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    summarizer: SummarizerConfig = field(default_factory=SummarizerConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    voice: VoiceConfig = field(default_factory=VoiceConfig)
    matrix: MatrixConfig = field(default_factory=MatrixConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)


class ConfigError(ValueError):
    pass


def _build(cls: type, table: dict[str, Any], where: str) -> Any:
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)} in [{where}]; known: {', '.join(sorted(known))}")
    values: dict[str, Any] = {}
    for name, value in table.items():
        kind = hints[name]
        if is_dataclass(kind):
            if not isinstance(value, dict):
                raise ConfigError(f"[{name}] must be a table")
            values[name] = _build(kind, value, name)
        elif kind is Path:
            if not isinstance(value, str):
                raise ConfigError(f"{where}.{name} must be a path string")
            values[name] = Path(value).expanduser()
        elif kind == tuple[str, ...]:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where}.{name} must be a list of strings, got {value!r}")
            values[name] = tuple(value)
        elif kind is float and isinstance(value, int) and not isinstance(value, bool):
            values[name] = float(value)
        elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"{where}.{name} must be {kind.__name__}, got {value!r}")
        else:
            values[name] = value
    return cls(**values)


def default_config_path() -> Path | None:
    """$TIDINGS_CONFIG, else ./tidings.toml, else ~/.config/tidings/tidings.toml."""
    env = os.environ.get("TIDINGS_CONFIG")
    if env:
        return Path(env)
    config_home = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config"))
    for candidate in (Path("tidings.toml"), config_home / "tidings" / "tidings.toml"):
        if candidate.is_file():
            return candidate
    return None


def load_config(path: Path | None = None) -> Config:
    path = path or default_config_path()
    if path is None:
        return Config()
    try:
        with open(path, "rb") as f:
            table = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return _build(Config, table, "config")


def with_overrides(config: Config, **sections: dict[str, Any]) -> Config:
    """A copy with some fields of some sections replaced (for CLI flags and tests)."""
    return replace(config, **{name: replace(getattr(config, name), **values) for name, values in sections.items()})
