"""Synthetic wearer speech: utterances from the TTS engines, noise at a chosen SNR,
and scripted microphone recordings (speech with pauses) for the voice loop.

Used by the voice benchmark and by the tests that drive the loop with real audio.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
from tidings.device.voice.audio import SAMPLE_RATE, resample
from tidings.device.voice.tts import Tts


@dataclass(frozen=True)
class Turn:
    """Say `text` after `pause` seconds of silence."""

    pause: float
    text: str


@dataclass(frozen=True)
class Script:
    audio: np.ndarray  # float32 mono at SAMPLE_RATE
    spans: tuple[tuple[float, float, str], ...]  # (start s, end s, text) of every utterance


def utterance(tts: Tts, text: str) -> np.ndarray:
    speech = tts.synthesize(text)
    return resample(speech.audio, speech.sample_rate, SAMPLE_RATE).astype(np.float32)


def with_noise(audio: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    """White noise at `snr_db` relative to the speech's power (measured where it is not silent)."""
    voiced = audio[np.abs(audio) > 1e-3]
    power = float(np.mean(voiced**2)) if len(voiced) else 1e-6
    noise = np.random.default_rng(seed).normal(0, np.sqrt(power / 10 ** (snr_db / 10)), len(audio))
    return (audio + noise).astype(np.float32)


def script_audio(tts: Tts, turns: Sequence[Turn], tail: float = 2.0) -> Script:
    pieces: list[np.ndarray] = []
    spans: list[tuple[float, float, str]] = []
    at = 0
    for turn in turns:
        silence = np.zeros(round(turn.pause * SAMPLE_RATE), np.float32)
        speech = utterance(tts, turn.text)
        pieces += [silence, speech]
        start = at + len(silence)
        spans.append((start / SAMPLE_RATE, (start + len(speech)) / SAMPLE_RATE, turn.text))
        at = start + len(speech)
    pieces.append(np.zeros(round(tail * SAMPLE_RATE), np.float32))
    return Script(np.concatenate(pieces), tuple(spans))


def write_wav(path: Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    soundfile.write(path, audio, sample_rate, subtype="PCM_16")
    return path
