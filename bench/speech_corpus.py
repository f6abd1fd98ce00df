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
from tidings.device.voice.audio import SAMPLE_RATE, MemorySource, resample
from tidings.device.voice.tts import Tts
from tidings.device.voice.vad import Endpointer, Utterance


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


def as_cut(endpointer: Endpointer, audio: np.ndarray, *, snr_db: float | None = None, seed: int = 0,
           around: float = 1.0) -> np.ndarray:
    """`audio` as the device hands it to recognition: `around` seconds of silence on each side (with white
    noise over all of it at `snr_db`, if given), cut by `endpointer` with its pre-roll, as the voice loop
    cuts the microphone. Several utterances cut from one clip are joined; none gives an empty clip."""
    silence = np.zeros(round(around * SAMPLE_RATE), np.float32)
    padded = np.concatenate([silence, audio, silence])
    if snr_db is not None:
        padded = with_noise(padded, snr_db, seed)
    endpointer.reset()
    cut = [e.audio for e in endpointer.run(MemorySource(padded)) if isinstance(e, Utterance)]
    return np.concatenate(cut) if cut else np.zeros(0, np.float32)


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
