"""Where audio comes from and goes to: one source and one sink interface.

Audio inside Tidings is float32 mono. Sources deliver 16 kHz in chunks of 512
samples (32 ms), the frame silero VAD takes. Sinks take any sample rate and
convert to their own with soxr, so a TTS engine's 24 or 22.05 kHz plays as is.

`play()` queues audio and returns at once, so the caller can keep listening
while it plays; `stop()` drops everything queued (barge-in: the wearer talks
over the glasses), `wait()` blocks until it has played.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import soundfile
import soxr

SAMPLE_RATE = 16_000
CHUNK = 512


class AudioDeviceError(RuntimeError):
    """A sound device is missing or broken; the message says what exists or how to fix it."""


class AudioSource(Protocol):
    def __iter__(self) -> Iterator[np.ndarray]:
        """float32 chunks of CHUNK samples at SAMPLE_RATE until the input ends or is closed."""
        ...

    def close(self) -> None: ...


class AudioSink(Protocol):
    def play(self, audio: np.ndarray, sample_rate: int) -> None:
        """Queue mono float32 audio after whatever is still playing; returns at once."""
        ...

    def stop(self) -> None:
        """Silence now and drop everything queued."""
        ...

    @property
    def playing(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool:
        """Block until everything queued has played (or was stopped); False on timeout."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Clip:
    audio: np.ndarray
    sample_rate: int

    @property
    def seconds(self) -> float:
        return len(self.audio) / self.sample_rate


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    if from_rate == to_rate:
        return audio
    return soxr.resample(audio, from_rate, to_rate)


def read_wav(path: Path | str) -> Clip:
    """A sound file as mono float32 at its own rate (channels are averaged)."""
    audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
    return Clip(audio.mean(axis=1), rate)


# -- in memory and in files ---------------------------------------------------


class MemorySource:
    """Chunks of an array; `realtime` paces them like a microphone.

    The last chunk is padded with zeros, then `tail_silence` seconds of silence
    follow, so that an endpointer sees the speech end before the input does.
    """

    def __init__(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE, *, realtime: bool = False,
                 tail_silence: float = 0.0):
        audio = resample(audio, sample_rate, SAMPLE_RATE)
        padding = (-len(audio)) % CHUNK + round(tail_silence * SAMPLE_RATE / CHUNK) * CHUNK
        self._audio = np.concatenate([audio, np.zeros(padding, np.float32)])
        self._realtime = realtime
        self._closed = False

    def __iter__(self) -> Iterator[np.ndarray]:
        started = time.monotonic()
        for n, at in enumerate(range(0, len(self._audio), CHUNK)):
            if self._closed:
                return
            if self._realtime:
                # A microphone hands over a chunk only once it has been recorded.
                time.sleep(max(0.0, started + (n + 1) * CHUNK / SAMPLE_RATE - time.monotonic()))
            yield self._audio[at:at + CHUNK]

    def close(self) -> None:
        self._closed = True


class WavFileSource(MemorySource):
    """A sound file (any rate, any channels) as if spoken into a microphone."""

    def __init__(self, path: Path | str, *, realtime: bool = True, tail_silence: float = 1.0):
        clip = read_wav(path)
        super().__init__(clip.audio, clip.sample_rate, realtime=realtime, tail_silence=tail_silence)


class MemorySink:
    """Keeps every clip played, in order; playback is instant. For tests."""

    def __init__(self) -> None:
        self.clips: list[Clip] = []
        self.stops = 0

    def play(self, audio: np.ndarray, sample_rate: int) -> None:
        self.clips.append(Clip(np.asarray(audio, dtype=np.float32), sample_rate))

    def stop(self) -> None:
        self.stops += 1

    @property
    def playing(self) -> bool:
        return False

    def wait(self, timeout: float | None = None) -> bool:
        return True

    def close(self) -> None:
        pass


class WavFileSink:
    """Everything played, in one WAV at `sample_rate`, written when closed.

    With `realtime`, the sink behaves like a speaker: a clip takes its duration
    to play, the time between clips (from the sink's creation on) is written as
    silence, and `stop()` cuts what has not played yet, so the file shows when
    things were said and where they were interrupted. Without it, clips are
    written back to back and play instantly.
    """

    def __init__(self, path: Path | str, *, sample_rate: int = 24_000, realtime: bool = False):
        self.path = Path(path)
        self.sample_rate = sample_rate
        self._realtime = realtime
        self._origin = time.monotonic()
        self._segments: list[tuple[int, np.ndarray]] = []  # (start sample, audio)
        self._end = 0  # sample where the queued audio ends
        self._closed = False

    def _now(self) -> int:
        if not self._realtime:
            return self._end
        return round((time.monotonic() - self._origin) * self.sample_rate)

    def play(self, audio: np.ndarray, sample_rate: int) -> None:
        audio = resample(audio, sample_rate, self.sample_rate)
        start = max(self._now(), self._end)
        self._segments.append((start, audio))
        self._end = start + len(audio)

    def stop(self) -> None:
        now = self._now()
        self._segments = [(start, audio[:now - start]) for start, audio in self._segments if start < now]
        self._end = min(self._end, now)

    @property
    def playing(self) -> bool:
        return self._now() < self._end

    def wait(self, timeout: float | None = None) -> bool:
        remaining = (self._end - self._now()) / self.sample_rate
        if timeout is not None and remaining > timeout:
            time.sleep(timeout)
            return False
        time.sleep(max(0.0, remaining))
        return True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        out = np.zeros(max(self._end, self._now()), np.float32)
        for start, audio in self._segments:
            out[start:start + len(audio)] = audio
        soundfile.write(self.path, out, self.sample_rate, subtype="PCM_16")


# -- sound devices -------------------------------------------------------------


def _sounddevice() -> Any:
    # Imported here, not at the top: without Debian's libportaudio2 the import
    # itself raises OSError, and files, memory and tests need no sound card.
    try:
        import sounddevice
    except (ImportError, OSError) as exc:
        raise AudioDeviceError(
            f"sound devices are unavailable ({exc}).\n"
            "  fix: ./setup.sh   (or: sudo apt-get install libportaudio2 && .venv/bin/pip install sounddevice)"
        ) from None
    return sounddevice


def find_device(name: str, kind: str) -> int:
    """The index of the first `kind` ("input" or "output") device whose name is or contains `name`;
    an empty name is the system default."""
    sd = _sounddevice()
    channels = f"max_{kind}_channels"
    devices = [(d["index"], d["name"]) for d in sd.query_devices() if d[channels] > 0]
    listing = ", ".join(repr(n) for _, n in devices) or "none"
    if not name:
        try:
            return sd.query_devices(kind=kind)["index"]
        except sd.PortAudioError:
            raise AudioDeviceError(f"there is no default {kind} device; {kind} devices: {listing}") from None
    for index, device in devices:
        if device == name:
            return index
    for index, device in devices:
        if name.lower() in device.lower():
            return index
    setting = "microphone" if kind == "input" else "speaker"
    raise AudioDeviceError(f"no {kind} device matches {name!r}; {kind} devices: {listing}.\n"
                           f"  fix: set [voice] {setting} to part of one of these names, or \"\" for the default")


class MicrophoneSource:
    """A sound input device through PortAudio.

    Captures at 16 kHz when the device accepts it, else at `capture_rate` or the
    device's default rate, converted on the fly.
    """

    def __init__(self, device: str = "", *, capture_rate: int | None = None, stall_timeout: float = 5.0):
        sd = _sounddevice()
        index = find_device(device, "input")
        if capture_rate is None:
            try:
                sd.check_input_settings(index, channels=1, dtype="float32", samplerate=SAMPLE_RATE)
                capture_rate = SAMPLE_RATE
            except sd.PortAudioError:
                capture_rate = int(sd.query_devices(index)["default_samplerate"])
        self._resampler = soxr.ResampleStream(capture_rate, SAMPLE_RATE, 1, dtype="float32")
        self._pending = np.zeros(0, np.float32)
        self._chunks: queue.Queue[np.ndarray | None] = queue.Queue()
        self._stall_timeout = stall_timeout
        self._stream = sd.InputStream(device=index, samplerate=capture_rate, channels=1, dtype="float32",
                                      blocksize=CHUNK * capture_rate // SAMPLE_RATE, callback=self._on_audio)
        self._stream.start()

    def _on_audio(self, indata: np.ndarray, frames: int, when: Any, status: Any) -> None:
        # PortAudio's thread: converts and cuts into CHUNKs; iteration happens on the caller's thread.
        self._pending = np.concatenate([self._pending, self._resampler.resample_chunk(indata[:, 0])])
        while len(self._pending) >= CHUNK:
            self._chunks.put(self._pending[:CHUNK].copy())
            self._pending = self._pending[CHUNK:]

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            try:
                chunk = self._chunks.get(timeout=self._stall_timeout)
            except queue.Empty:
                raise AudioDeviceError(f"the microphone delivered no audio for {self._stall_timeout:g} s") from None
            if chunk is None:
                return
            yield chunk

    def close(self) -> None:
        self._stream.close()
        self._chunks.put(None)


class SpeakerSink:
    """A sound output device through PortAudio, open for the sink's lifetime.

    Plays at `sample_rate` (default: the device's own rate); queued clips are
    converted to it when queued.
    """

    def __init__(self, device: str = "", *, sample_rate: int | None = None):
        sd = _sounddevice()
        index = find_device(device, "output")
        self.sample_rate = sample_rate or int(sd.query_devices(index)["default_samplerate"])
        self._lock = threading.Lock()
        self._queue: deque[np.ndarray] = deque()
        self._offset = 0  # samples of the head clip already played
        self._idle = threading.Event()
        self._idle.set()
        self._stream = sd.OutputStream(device=index, samplerate=self.sample_rate, channels=1, dtype="float32",
                                       callback=self._fill)
        self._stream.start()

    def _fill(self, outdata: np.ndarray, frames: int, when: Any, status: Any) -> None:
        filled = 0
        with self._lock:
            while filled < frames and self._queue:
                head = self._queue[0]
                n = min(frames - filled, len(head) - self._offset)
                outdata[filled:filled + n, 0] = head[self._offset:self._offset + n]
                filled += n
                self._offset += n
                if self._offset == len(head):
                    self._queue.popleft()
                    self._offset = 0
            if not self._queue:
                self._idle.set()
        outdata[filled:] = 0

    def play(self, audio: np.ndarray, sample_rate: int) -> None:
        audio = resample(audio, sample_rate, self.sample_rate)
        with self._lock:
            self._queue.append(audio)
            self._idle.clear()

    def stop(self) -> None:
        with self._lock:
            self._queue.clear()
            self._offset = 0
            self._idle.set()

    @property
    def playing(self) -> bool:
        return not self._idle.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        if not self._idle.wait(timeout):
            return False
        # The last samples handed to PortAudio still sit in the device's buffer.
        time.sleep(self._stream.latency)
        return True

    def close(self) -> None:
        # stop() lets PortAudio play out its buffers; close() alone would cut them.
        self._stream.stop()
        self._stream.close()
