"""Text to speech: hibari (natural, bundled voice) or espeak-ng (robotic, tiny).

    tts = open_tts(config.voice)
    for sentence in sentences(engine_pieces):     # tidings.device.summary.sentences: speak while the rest generates
        speech = tts.synthesize(sentence)
        sink.play(speech.audio, speech.sample_rate)
"""

from __future__ import annotations

import io
import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import soundfile
from tidings.device.config import ModelConfig, VoiceConfig
from tidings.device.memory import release_free_memory
from tidings.models.registry import ModelError
from tidings.models.speech import HIBARI_HEART, speech_model_dir

log = logging.getLogger(__name__)


class TtsError(RuntimeError):
    """No speech engine can be used; the message says how to fix it."""


@dataclass(frozen=True)
class Speech:
    audio: np.ndarray  # float32 mono
    sample_rate: int
    text: str

    @property
    def seconds(self) -> float:
        return len(self.audio) / self.sample_rate


def trim_leading_silence(audio: np.ndarray, sample_rate: int, floor: float = 0.01, keep_ms: float = 20) -> np.ndarray:
    """Drop the silence a voice starts with (hibari: about 0.3 s): the first word is heard that much sooner."""
    loud = np.flatnonzero(np.abs(audio) > floor)
    if not len(loud):
        return audio
    return audio[max(0, loud[0] - round(keep_ms / 1000 * sample_rate)):]


class Tts(Protocol):
    def synthesize(self, text: str) -> Speech: ...


class HibariTts:
    """hibari-tts with its bundled voice "heart", 24 kHz."""

    def __init__(self, voice: str = "heart", *, threads: int = 1, cache_dir: Path | None = None):
        if voice != "heart":
            # Every other hibari voice is fetched from a model hub on first use.
            raise TtsError(f"hibari voice {voice!r} is not shipped in its package; only \"heart\" is.\n"
                           f"  fix: set [voice] voice = \"heart\"")
        # Imported here so that open_tts can fall back to espeak-ng without hibari-tts.
        from hibari import Hibari
        from tidings.device.voice.g2p import LeanG2P, ensure_g2p_tables

        model = speech_model_dir(HIBARI_HEART) / "hibari.onnx"
        # Loaded now rather than on the first sentence: the first word is not kept waiting for it.
        g2p = LeanG2P(ensure_g2p_tables(cache_dir or ModelConfig().cache_dir))
        self._hibari = Hibari(voice=voice, model=str(model), threads=threads, g2p=g2p)
        release_free_memory()
        self.sample_rate: int = self._hibari.sample_rate

    def synthesize(self, text: str) -> Speech:
        # A fixed seed makes the same text sound the same every time.
        return Speech(trim_leading_silence(self._hibari(text, seed=0), self.sample_rate), self.sample_rate, text)


class EspeakTts:
    """The espeak-ng command line, 22.05 kHz."""

    def __init__(self, voice: str = "en-us", *, words_per_minute: int = 160):
        self._binary = shutil.which("espeak-ng")
        if self._binary is None:
            raise TtsError("espeak-ng is not installed.\n  fix: ./setup.sh   (or: sudo apt-get install espeak-ng)")
        self._voice = voice
        self._words_per_minute = words_per_minute

    def synthesize(self, text: str) -> Speech:
        # Text goes in on stdin: on the command line, text starting with "-" would be read as an option.
        result = subprocess.run([self._binary, "-v", self._voice, "-s", str(self._words_per_minute),
                                 "--stdout", "--stdin"], input=text.encode(), capture_output=True, check=False)
        if result.returncode != 0:
            raise TtsError(f"espeak-ng failed ({result.returncode}): {result.stderr.decode(errors='replace').strip()}")
        audio, rate = soundfile.read(io.BytesIO(result.stdout), dtype="float32")
        return Speech(trim_leading_silence(audio, rate), rate, text)


def open_tts(config: VoiceConfig) -> Tts:
    """The configured engine; hibari falls back to espeak-ng, with a warning, when it cannot load."""
    if config.tts_engine == "espeak":
        return EspeakTts()
    if config.tts_engine != "hibari":
        raise TtsError(f"unknown tts_engine {config.tts_engine!r}.\n  fix: set [voice] tts_engine to \"hibari\" or \"espeak\"")
    try:
        return HibariTts(config.voice)
    except (ImportError, ModelError) as exc:
        reason = exc
    try:
        tts = EspeakTts()
    except TtsError as exc:
        raise TtsError(f"no speech engine works: hibari: {reason}\n  espeak-ng: {exc}") from None
    log.warning("hibari TTS unavailable (%s); speaking with espeak-ng instead", reason)
    return tts


# A sentence ends at . ! ? or … (plus closing quotes or brackets) before
# whitespace, or at a line break. It is cut only once the next word has begun:
# that tells "3.5" and "Dr. Smith" or "5 p.m. tomorrow" from a real end.
