"""The on-device LLM: one long-lived llama.cpp model per process.

`Engine` owns the model and its context. It streams generations with stop
sequences, keeps LoRA adapters loaded beside the base model and switches or
scales them between requests without reloading the base, and resets the KV
cache whenever the active adapters change, since cached keys and values
computed under one adapter are wrong under another.

Prompt-prefix reuse: llama-cpp-python keeps the tokens of the previous call
and evaluates only the suffix of a prompt that shares a prefix with it. Gemma 3
uses a sliding-window KV cache that cannot be trimmed in the middle, so the
context is created with a full-size SWA cache (`swa_full`), which makes that
reuse possible (a summary's retry and its reply suggestions share the thread's
dialogue as a prefix).

A lean-vocabulary model (models/trim.py) is used like any other: the engine
reads its input with the full model's tokenizer (device/llm/vocab.py), so
adapters trained on the full model apply unchanged.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import llama_cpp
import numpy as np
from tidings.device.llm.beam import TokenModel, beam_search, logits_at
from tidings.device.config import EngineConfig
from tidings.device.memory import release_free_memory
from tidings.device.llm.prompts import FORMATS, Prompt, PromptFormat
from tidings.device.llm.vocab import LeanTokenizer, ModelTokenizer
from tidings.models.registry import ModelFile
from tidings.models.spm import SpmTokenizer


class AdapterError(RuntimeError):
    """An adapter file could not be loaded; the engine keeps its previous adapters."""


@dataclass(frozen=True)
class Adapter:
    name: str
    path: Path
    alpha: float | None
    handle: int  # llama_adapter_lora pointer value, owned by the engine


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int  # evaluated for this call: a reused prefix is not counted
    generated_tokens: int
    finish_reason: str  # "stop" (end of turn or a stop sequence) or "length"
    seconds: float
    runners_up: tuple[str, ...] = ()  # a beam search's other finished texts, best first


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def detect_prompt_format(metadata: dict[str, str], default: str | None) -> PromptFormat:
    """The manifest's format, else the GGUF's own chat template, else its architecture."""
    if default:
        return FORMATS[default]
    template = metadata.get("tokenizer.chat_template", "")
    if "<|im_start|>" in template:
        return FORMATS["chatml"]
    if "<start_of_turn>" in template or metadata.get("general.architecture", "").startswith("gemma"):
        return FORMATS["gemma"]
    raise ValueError("cannot tell this model's prompt format: it has no chat template Tidings knows")


llama_log = logging.getLogger("tidings.llama")
_GGML_LOG_ERROR = 4  # ggml_log_level: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5


@llama_cpp.llama_log_callback
def _to_python_logging(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    # llama.cpp warns about every adapter tensor it cannot repack and sizes every cache:
    # news to an engineer at -v, noise to a wearer. Errors (ggml level 4) are always logged.
    message = text.decode("utf-8", "replace").rstrip()
    if message:
        llama_log.log(logging.ERROR if level == _GGML_LOG_ERROR else logging.DEBUG, "%s", message)


@functools.cache
def route_llama_logs() -> None:
    """llama.cpp and ggml log through Python's logging ("tidings.llama"), not straight to stderr."""
    llama_cpp.llama_log_set(_to_python_logging, ctypes.c_void_p(0))


class Engine:
    def __init__(self, model: ModelFile, config: EngineConfig = EngineConfig()) -> None:
        route_llama_logs()
        started = time.perf_counter()
        threads = config.n_threads or _cpu_count()
        self.model = model
        self.llm = llama_cpp.Llama(
            model_path=str(model.path),
            n_ctx=config.n_ctx,
            n_batch=config.n_batch,
            n_threads=threads,
            n_threads_batch=threads,
            seed=config.seed,
            swa_full=True,
            use_mmap=config.use_mmap,
            verbose=False,
        )
        self.max_beams = config.max_beams
        # Twice the beams: a step's new hypotheses take fresh sequences before the old ones are dropped.
        self._add_sequences(2 * config.max_beams)
        self.load_seconds = time.perf_counter() - started
        self.prompt_format = detect_prompt_format(
            self.llm.metadata, model.spec.prompt_format if model.spec else None
        )
        self.tokenizer = (
            LeanTokenizer(SpmTokenizer.load(model.full_tokenizer), model.full_vocabulary,
                          np.load(model.lean.kept_ids_path), self.llm, exact=config.lean_input == "exact")
            if model.lean else ModelTokenizer(self.llm)
        )
        self._rng = np.random.default_rng(config.seed)  # a lean model's sampling (llama.cpp samples the others)
        self._adapters: dict[str, Adapter] = {}
        self._active: dict[str, float] = {}
        release_free_memory()

    # -- tokens -------------------------------------------------------------

    @property
    def n_ctx(self) -> int:
        return self.llm.n_ctx()

    def tokenize(self, prompt: Prompt) -> list[int]:
        return self.tokenizer.prompt(prompt)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.text(text))

    def next_token_logits(self, tokens: list[int]) -> np.ndarray:
        """Evaluate `tokens` from an empty cache; the logits for the token after them.

        Read from the context directly: llama-cpp-python keeps per-token
        scores only when built with logits_all, which costs memory.
        """
        self.reset_cache()
        self.llm.eval(tokens)
        return logits_at(self.llm.ctx, -1, self.llm.n_vocab()).astype(np.float64)

    # -- generation ---------------------------------------------------------

    def stream(
        self,
        prompt: Prompt,
        *,
        max_tokens: int = 128,
        stop: tuple[str, ...] = (),
        temperature: float = 0.0,
    ) -> Iterator[str]:
        """Yield the generated text piece by piece; greedy unless a temperature is given."""
        for chunk in self._create(prompt, max_tokens, stop, temperature):
            text = chunk["choices"][0]["text"]
            if text:
                yield text

    def complete(
        self,
        prompt: Prompt,
        *,
        max_tokens: int = 128,
        stop: tuple[str, ...] = (),
        temperature: float = 0.0,
        beams: int = 1,
        length_penalty: float = 1.0,
    ) -> Completion:
        """Greedy, sampled at `temperature`, or with `beams` > 1 the best of a beam search."""
        if beams > 1:
            return self.beam_search(prompt, beams=beams, max_tokens=max_tokens, stop=stop, length_penalty=length_penalty)
        started = time.perf_counter()
        llama_cpp.llama_perf_context_reset(self.llm.ctx)
        pieces: list[str] = []
        finish = "length"
        for chunk in self._create(prompt, max_tokens, stop, temperature):
            choice = chunk["choices"][0]
            pieces.append(choice["text"])
            finish = choice.get("finish_reason") or finish
        perf = llama_cpp.llama_perf_context(self.llm.ctx)
        return Completion(
            "".join(pieces), perf.n_p_eval, perf.n_eval, finish, time.perf_counter() - started
        )

    def beam_search(self, prompt: Prompt, *, beams: int, max_tokens: int = 128, stop: tuple[str, ...] = (),
                    length_penalty: float = 1.0) -> Completion:
        """The best of `beams` hypotheses (device/llm/beam.py); one beam is greedy decoding."""
        if beams > self.max_beams:
            raise ValueError(f"a beam search of {beams} needs [engine] max_beams >= {beams} "
                             f"(this engine has sequences for {self.max_beams})")
        started = time.perf_counter()
        if self._lean_exact:
            model = self.tokenizer.beam_model(prompt)
            n_prompt = len(model.full_ids)
        else:
            tokens = self.tokenizer.prompt(prompt)
            model = TokenModel(self.llm.model, tokens, self.llm.n_batch,
                               detokenize=lambda ids: self.llm.detokenize(ids).decode("utf-8", errors="ignore"))
            n_prompt = len(tokens)
        self._check_fits(n_prompt, max_tokens)
        self.reset_cache()  # the search uses every sequence; llama-cpp-python must not expect its tokens there
        result = beam_search(self.llm.ctx, model, beams=beams, max_tokens=max_tokens,
                             stop=prompt.stop + stop, length_penalty=length_penalty)
        return Completion(result.text, n_prompt, len(result.candidates), result.finish,
                          time.perf_counter() - started, result.runners_up)

    def _add_sequences(self, n_seq: int) -> None:
        """Remake llama-cpp-python's one-sequence context with `n_seq` sequences sharing one cache.

        Beam search keeps a hypothesis per sequence; everything else uses sequence 0, and the
        parameters are otherwise the same, so are the logits (tests/test_lean_vocab.py). One
        context rather than a second beside it: that one's cache and buffers cost 60 MB.
        """
        params = type(self.llm.context_params).from_buffer_copy(self.llm.context_params)
        params.n_seq_max = n_seq
        params.kv_unified = True  # sequences share cache cells, so copying one is only bookkeeping
        self.llm._ctx.close()  # freed before the new one is made: one cache at a time
        self.llm._ctx = llama_cpp._internals.LlamaContext(model=self.llm._model, params=params, verbose=False)
        self.llm.context_params = params

    @property
    def _lean_exact(self) -> bool:
        """A lean model reading exact input: it generates through its own loop (device/llm/vocab.py)."""
        return isinstance(self.tokenizer, LeanTokenizer) and self.tokenizer.exact

    def _check_fits(self, n_prompt: int, max_tokens: int) -> None:
        if n_prompt + max_tokens > self.n_ctx:
            raise ValueError(
                f"prompt of {n_prompt} tokens plus {max_tokens} to generate exceeds the "
                f"context of {self.n_ctx}; fold the input into smaller pieces first"
            )

    def _create(self, prompt: Prompt, max_tokens: int, stop: tuple[str, ...], temperature: float):
        tokens = self.tokenizer.full_ids(prompt) if self._lean_exact else self.tokenizer.prepare(prompt)
        self._check_fits(len(tokens), max_tokens)
        if self._lean_exact:
            return self.tokenizer.generate(prompt, max_tokens=max_tokens, stop=prompt.stop + stop,
                                           temperature=temperature, rng=self._rng)
        return self.llm.create_completion(
            tokens,
            max_tokens=max_tokens,
            temperature=temperature,
            top_k=1 if temperature == 0 else 40,
            repeat_penalty=1.0,
            stop=list(prompt.stop + stop),
            stream=True,
        )

    # -- adapters -----------------------------------------------------------

    def load_adapter(self, path: Path, name: str | None = None) -> Adapter:
        """Load a GGUF LoRA beside the base model; it stays inactive until `set_adapters`."""
        path = Path(path)
        name = name or path.stem
        if name in self._adapters:
            raise AdapterError(f"an adapter named {name!r} is already loaded")
        if not path.is_file():
            raise AdapterError(f"adapter file {path} does not exist")
        with path.open("rb") as f:
            if f.read(4) != b"GGUF":
                raise AdapterError(f"{path} is not a GGUF file (bad magic); is it a PEFT adapter? convert it first")
        handle = llama_cpp.llama_adapter_lora_init(self.llm.model, str(path).encode())
        if not handle:
            raise AdapterError(
                f"llama.cpp rejected the adapter {path}: corrupt, or made for another base model "
                f"than {self.model.name}"
            )
        adapter = Adapter(name, path, _adapter_alpha(handle), ctypes.cast(handle, ctypes.c_void_p).value)
        self._adapters[name] = adapter
        return adapter

    def set_adapters(self, scales: dict[str, float]) -> None:
        """Make exactly these adapters active, with these scales (an empty dict clears them)."""
        unknown = set(scales) - set(self._adapters)
        if unknown:
            raise AdapterError(f"adapter(s) not loaded: {', '.join(sorted(unknown))}")
        if scales == self._active:
            return
        names = list(scales)
        handles = (llama_cpp.llama_adapter_lora_p_ctypes * len(names))(
            *(ctypes.cast(self._adapters[n].handle, llama_cpp.llama_adapter_lora_p_ctypes) for n in names)
        )
        values = (ctypes.c_float * len(names))(*(scales[n] for n in names))
        if llama_cpp.llama_set_adapters_lora(self.llm.ctx, handles, len(names), values) != 0:
            raise AdapterError(f"llama.cpp could not activate adapters {names}")
        self._active = dict(scales)
        self.reset_cache()

    def unload_adapter(self, name: str) -> None:
        if name in self._active:
            self.set_adapters({n: s for n, s in self._active.items() if n != name})
        adapter = self._adapters.pop(name)
        llama_cpp.llama_adapter_lora_free(ctypes.cast(adapter.handle, llama_cpp.llama_adapter_lora_p_ctypes))

    @property
    def active_adapters(self) -> dict[str, float]:
        return dict(self._active)

    @property
    def loaded_adapters(self) -> dict[str, Adapter]:
        return dict(self._adapters)

    def reset_cache(self) -> None:
        """Forget every cached token: the next prompt is evaluated from scratch."""
        self.llm.reset()
        self.tokenizer.forget()
        memory = llama_cpp.llama_get_memory(self.llm.ctx)
        if memory is not None:
            llama_cpp.llama_memory_clear(memory, True)

    def close(self) -> None:
        for name in list(self._adapters):
            self.unload_adapter(name)
        self.llm.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _adapter_alpha(handle) -> float | None:
    buf = ctypes.create_string_buffer(64)
    if llama_cpp.llama_adapter_meta_val_str(handle, b"adapter.lora.alpha", buf, len(buf)) < 0:
        return None
    return float(buf.value.decode())
