"""Wire the pieces for one device: model, engine, adapter, summarizer, store, voice.

`announce_unread` is the one-way flow a summary takes: unread messages, then
the summarizer, then the store (summary saved and messages marked read in one
transaction), then whoever announces it. Saving before announcing is what makes
a crash at any point announce nothing twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from tidings.device.config import Config
from tidings.device.fleet import follow_fleet
from tidings.device.llm.engine import Engine
from tidings.device.store import Store
from tidings.device.summary.summarizer import Summarizer, ThreadSummary
from tidings.device.summary.wearer import Wearer
from tidings.device.voice.audio import AudioSink, AudioSource
from tidings.device.voice.compose import ReplyComposer
from tidings.device.voice.loop import Mark, VoiceLoop
from tidings.device.voice.stt import WhisperStt
from tidings.device.voice.tts import open_tts
from tidings.device.voice.vad import Endpointer, SileroVad
from tidings.models.registry import (
    load_adapter_manifest,
    load_lean_manifest,
    load_manifest,
    resolve_adapter,
    resolve_model,
)

log = logging.getLogger("tidings")
TASK_ADAPTER = "task"


def open_engine(config: Config) -> Engine:
    model = resolve_model(config.model.name, config.model.cache_dir)
    engine = Engine(model, config.engine)
    log.info("loaded %s in %.2f s (%s prompt format)", model.name, engine.load_seconds, engine.prompt_format.name)
    return engine


def open_summarizer(config: Config, *, use_adapter: bool = True) -> Summarizer:
    """A summarizer on the model path when the model can summarize, else verbatim and fallback only.

    The embedded Gemma 3 270M is a base model: without its task adapter it
    echoes prompts, so it is not loaded at all unless an adapter is configured
    or the caller asks to see the bare base (`use_adapter=False`).
    """
    adapter = config.model.task_adapter if use_adapter else ""
    shipped = load_adapter_manifest().get(adapter)
    lean = load_lean_manifest().get(config.model.name)
    base = lean.base if lean else config.model.name  # a lean model runs its base model's adapters
    if shipped and shipped.base != base:
        log.warning("the shipped adapter %r is for %s, not %s: running without it", adapter, shipped.base,
                    config.model.name)
        adapter = ""
    spec = load_manifest().get(base)
    if use_adapter and not adapter and not (spec and spec.instruction_tuned):
        log.warning("no task adapter for %s, a base model: summaries are read verbatim or from the key messages "
                    "(set [model] task_adapter to use the model)", config.model.name)
        return Summarizer(config.summarizer, wearer=Wearer.from_config(config.wearer))
    engine = open_engine(config)
    if adapter:
        engine.load_adapter(resolve_adapter(adapter, engine.model), name=TASK_ADAPTER)
        engine.set_adapters({TASK_ADAPTER: config.model.task_adapter_scale})
        log.info("task adapter %s active at scale %.2f", adapter, config.model.task_adapter_scale)
    return Summarizer(config.summarizer, engine, Wearer.from_config(config.wearer))


def announce_unread(store: Store, summarizer: Summarizer, announce: Callable[[ThreadSummary], None]) -> int:
    """Summarize every thread with unread messages, oldest first; returns how many were announced."""
    count = 0
    for thread in store.unread_threads():
        summary = summarizer.summarize(thread, store.unread_messages(thread))
        store.record_summary(thread, summary.message_ids, summary.to_json())
        announce(summary)
        count += 1
    return count


def open_voice_loop(config: Config, store: Store, summarizer: Summarizer, source: AudioSource, sink: AudioSink,
                    on_mark: Callable[[Mark], None] | None = None) -> VoiceLoop:
    """The voice loop on this device's speech engines, sharing the summarizer's LLM for replies.

    A device in the fleet swaps each newly fetched adapter version in while the loop is idle.
    """
    voice = config.voice
    fleet = follow_fleet(config, summarizer.engine, TASK_ADAPTER, summarizer)
    return VoiceLoop(
        store=store, summarizer=summarizer, composer=ReplyComposer(summarizer.engine),
        tts=open_tts(voice), stt=WhisperStt(threads=voice.stt_threads, beam_size=voice.stt_beam_size),
        endpointer=Endpointer(SileroVad(), threshold=voice.vad_threshold, hangover_ms=voice.vad_hangover_ms),
        source=source, sink=sink, wearer=Wearer.from_config(config.wearer), on_mark=on_mark,
        keep_examples=config.federation.keep_examples, prime_dictation=voice.prime_dictation,
        between_turns=fleet.refresh if fleet else lambda: None,
    )
