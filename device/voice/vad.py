"""Voice activity: silero VAD v6 (ONNX) and an endpointer that cuts utterances.

The model is the copy faster-whisper ships (assets/silero_vad_v6.onnx), run
directly with onnxruntime one 32 ms chunk at a time: inputs `input` [1, 64+512]
(the previous chunk's last 64 samples, then the chunk), LSTM state `h` and `c`
[1, 1, 128]; output the speech probability. The `silero-vad` package's own
file has another layout (a single `state` and an `sr` input).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from tidings.device.voice.audio import CHUNK, SAMPLE_RATE
from tidings.models.speech import SILERO_VAD, speech_model_dir

_CONTEXT = 64


class SileroVad:
    """Speech probability of consecutive chunks; it remembers the stream so far (LSTM state)."""

    def __init__(self) -> None:
        # Imported here so that importing this module stays cheap.
        import onnxruntime

        options = onnxruntime.SessionOptions()
        # ~0.1 ms per chunk on one thread: more would only contend with whisper and the LLM.
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = onnxruntime.InferenceSession(str(speech_model_dir(SILERO_VAD) / "silero_vad_v6.onnx"),
                                                     options, providers=["CPUExecutionProvider"])
        self.reset()

    def reset(self) -> None:
        """Forget the stream: the next chunk starts a new one."""
        self._h = np.zeros((1, 1, 128), np.float32)
        self._c = np.zeros((1, 1, 128), np.float32)
        self._context = np.zeros(_CONTEXT, np.float32)

    def probability(self, chunk: np.ndarray) -> float:
        """P(speech) for the next CHUNK samples of 16 kHz float32 audio."""
        if chunk.shape != (CHUNK,):
            raise ValueError(f"silero VAD takes chunks of {CHUNK} samples at {SAMPLE_RATE} Hz, got shape {chunk.shape}")
        frame = np.concatenate([self._context, chunk.astype(np.float32, copy=False)])[None, :]
        prob, self._h, self._c = self._session.run(None, {"input": frame, "h": self._h, "c": self._c})
        self._context = frame[0, -_CONTEXT:]
        return float(prob.reshape(-1)[0])


@dataclass(frozen=True)
class SpeechStarted:
    """The wearer began to speak: the moment to stop playback (barge-in)."""

    at: float  # seconds since the endpointer's first chunk


@dataclass(frozen=True)
class Utterance:
    audio: np.ndarray  # float32 16 kHz, with pre-roll before the speech and as much after it
    start: float  # seconds since the endpointer's first chunk, where speech began
    end: float  # where the last speech chunk ended
    cut: bool = False  # True when cut at the maximum length rather than by silence

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE


@dataclass(frozen=True)
class Paused:
    """The wearer has been silent long enough that `audio` is the whole utterance unless they go on:
    the moment to start recognizing it, so the transcript is ready when the hangover ends. The
    Utterance that follows has the same `end` and audio when no speech came in between."""

    audio: np.ndarray
    end: float


Event = SpeechStarted | Paused | Utterance

_CHUNK_SECONDS = CHUNK / SAMPLE_RATE


class Endpointer:
    """Turns a stream of 512-sample chunks into SpeechStarted, Paused and Utterance events.

    Speech starts after `start_chunks` chunks in a row at or above `threshold`
    and ends after `hangover_ms` below `threshold - 0.15` (silero's own
    hysteresis, so a dip mid-word does not end the utterance). `pre_roll_ms`
    into that silence, the utterance's audio is complete unless speech resumes
    (it keeps as much after the speech as before it): Paused carries it then.
    Speech that goes on for `max_seconds` is cut there, and a new utterance may
    start at once.
    """

    def __init__(self, vad: SileroVad, *, threshold: float = 0.5, hangover_ms: int = 700, pre_roll_ms: int = 300,
                 max_seconds: float = 15.0, start_chunks: int = 2):
        self._vad = vad
        self._threshold = threshold
        self._hangover = max(1, round(hangover_ms / 1000 / _CHUNK_SECONDS))
        self._pre_roll = round(pre_roll_ms / 1000 / _CHUNK_SECONDS)
        self._max_chunks = round(max_seconds / _CHUNK_SECONDS)
        self._start_chunks = start_chunks
        self._recent: deque[np.ndarray] = deque(maxlen=self._pre_roll + start_chunks)
        self.reset()

    def reset(self) -> None:
        """Forget everything heard, as for a new stream."""
        self._vad.reset()
        self._recent.clear()
        self._chunks_seen = 0
        self._voiced_run = 0
        self._speech: list[np.ndarray] | None = None  # chunks of the current utterance, from its pre-roll on
        self._speech_start = 0  # chunk index where speech began
        self._last_voiced = 0  # chunk index of the last voiced chunk in the utterance

    def push(self, chunk: np.ndarray) -> list[Event]:
        """Consume one chunk; the events it completes, in order."""
        index = self._chunks_seen
        self._chunks_seen += 1
        prob = self._vad.probability(chunk)
        if self._speech is None:
            self._recent.append(chunk)
            self._voiced_run = self._voiced_run + 1 if prob >= self._threshold else 0
            if self._voiced_run < self._start_chunks:
                return []
            self._speech = list(self._recent)
            self._speech_start = index - self._start_chunks + 1
            self._last_voiced = index
            self._recent.clear()
            return [SpeechStarted(self._speech_start * _CHUNK_SECONDS)]
        self._speech.append(chunk)
        if prob >= self._threshold - 0.15:
            self._last_voiced = index
        if index - self._last_voiced >= self._hangover:
            return [self._finish(cut=False)]
        if index - self._last_voiced == self._pre_roll:
            return [Paused(np.concatenate(self._speech), (self._last_voiced + 1) * _CHUNK_SECONDS)]
        if self._last_voiced - self._speech_start + 1 >= self._max_chunks:
            return [self._finish(cut=True)]
        return []

    def flush(self) -> list[Event]:
        """End of input: the utterance in progress, if any."""
        return [self._finish(cut=False)] if self._speech is not None else []

    def run(self, chunks: Iterable[np.ndarray]) -> Iterator[Event]:
        for chunk in chunks:
            yield from self.push(chunk)
        yield from self.flush()

    def _finish(self, *, cut: bool) -> Utterance:
        assert self._speech is not None
        first = self._chunks_seen - len(self._speech)  # chunk index of the first pre-roll chunk
        # Keep as much audio after the last voiced chunk as before the first one.
        keep = min(len(self._speech), self._last_voiced + 1 + self._pre_roll - first)
        audio = np.concatenate(self._speech[:keep])
        utterance = Utterance(audio, self._speech_start * _CHUNK_SECONDS, (self._last_voiced + 1) * _CHUNK_SECONDS, cut)
        self._speech = None
        self._voiced_run = 0
        return utterance
