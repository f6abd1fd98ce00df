"""Real sound devices through PortAudio, on the virtual PulseAudio speaker and microphone."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from tests.virtual_audio import VirtualAudio, virtual_audio  # noqa: F401  (the fixture)
from tidings.device.voice.audio import (CHUNK, SAMPLE_RATE, AudioDeviceError, MicrophoneSource, SpeakerSink,
                                        find_device)
from tidings.device.voice.stt import WhisperStt
from tidings.device.voice.tts import HibariTts
from tidings.device.voice.vad import Endpointer, Paused, SileroVad, SpeechStarted, Utterance

# Enough chunks to never wait forever if the audio does not arrive (20 s).
MAX_CHUNKS = 20 * SAMPLE_RATE // CHUNK


@pytest.fixture(scope="module")
def hibari() -> HibariTts:
    return HibariTts()


def listening(mic: MicrophoneSource) -> Iterator[np.ndarray]:
    """The microphone's chunks, once it delivers: capture starts 0.5-0.8 s (or more) after opening."""
    chunks = iter(mic)
    next(chunks)
    return chunks


@pytest.mark.parametrize("capture_rate", [None, 48_000], ids=["16k", "48k-converted"])
def test_speech_played_into_the_microphone_is_heard_and_transcribed(virtual_audio: VirtualAudio, hibari,
                                                                    capture_rate):
    mic = MicrophoneSource(virtual_audio.mic, capture_rate=capture_rate)
    speaker = SpeakerSink(virtual_audio.mic_feed)
    try:
        chunks = listening(mic)
        speech = hibari.synthesize("Tell her I will be there at six.")
        speaker.play(speech.audio, speech.sample_rate)
        endpointer = Endpointer(SileroVad())
        events = []
        for _, chunk in zip(range(MAX_CHUNKS), chunks):
            events += endpointer.push(chunk)
            if events and isinstance(events[-1], Utterance):
                break
    finally:
        mic.close()
        speaker.close()
    assert [type(e) for e in events if not isinstance(e, Paused)] == [SpeechStarted, Utterance]
    text = WhisperStt().transcribe(events[-1].audio).text
    assert text.lower().replace("6", "six").rstrip(".") == "tell her i will be there at six"


def test_stop_interrupts_playback(virtual_audio: VirtualAudio, hibari):
    # The app speaks a long announcement; as soon as speech is heard (here: its
    # own, through the speaker's monitor) it stops, as it would on barge-in.
    speech = hibari.synthesize("Anna asks whether you can pick up Lily from school at half past five today, "
                               "and whether you could also bring the blue bag she forgot this morning.")
    mic = MicrophoneSource(virtual_audio.speaker_monitor)
    speaker = SpeakerSink(virtual_audio.speaker)
    heard: list[np.ndarray] = []
    try:
        chunks = listening(mic)
        speaker.play(speech.audio, speech.sample_rate)
        assert speaker.playing
        endpointer = Endpointer(SileroVad())
        events = []
        for _, chunk in zip(range(MAX_CHUNKS), chunks):
            heard.append(chunk)
            for event in endpointer.push(chunk):
                events.append(event)
                if isinstance(event, SpeechStarted):
                    speaker.stop()
                    assert not speaker.playing
            if events and isinstance(events[-1], Utterance):
                break
        assert speaker.wait(timeout=0)
    finally:
        mic.close()
        speaker.close()
    assert [type(e) for e in events if not isinstance(e, Paused)] == [SpeechStarted, Utterance]
    utterance = events[-1]
    assert utterance.end - utterance.start < speech.seconds / 3
    # After the stop the speaker is silent: the last half second heard is digital silence.
    assert np.abs(np.concatenate(heard[-SAMPLE_RATE // 2 // CHUNK:])).max() < 1e-4


def test_missing_device_names_the_devices_that_exist(virtual_audio: VirtualAudio):
    with pytest.raises(AudioDeviceError, match=r"no input device matches 'glasses-mic'.*'tidings_mic'"):
        MicrophoneSource("glasses-mic")
    with pytest.raises(AudioDeviceError, match=r"no output device matches 'glasses-speaker'.*'tidings_speaker'"):
        SpeakerSink("glasses-speaker")


def test_devices_are_found_by_name_or_part_of_it(virtual_audio: VirtualAudio):
    import sounddevice

    def name(index: int) -> str:
        return sounddevice.query_devices(index)["name"]

    assert name(find_device("tidings_speaker", "output")) == "tidings_speaker"  # exact beats "tidings_speaker_monitor"
    assert name(find_device("SPEAKER_MON", "input")) == "tidings_speaker_monitor"  # any case, any part
