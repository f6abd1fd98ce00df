"""The voice benchmark on a tiny input: every documented key is there and every figure is sane.

No timing is asserted: only that the measurements exist and are consistent.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tidings.bench.dictations import DICTATIONS
from tidings.bench.speech_corpus import as_cut, utterance
from tidings.bench.voice_bench import COMMAND_PHRASES, REPLIES, Options, normalize, run, save
from tidings.device.voice.commands import Command
from tidings.device.voice.tts import HibariTts
from tidings.device.voice.vad import Endpointer, SileroVad


@pytest.mark.parametrize("reference, transcript", [
    ("Sure, I'll pick up Lily at 5:30.", "sure I'll pick up Lily at five thirty"),
    ("Can we move the call to 3 pm tomorrow?", "Can we move the call to three p.m. tomorrow"),
    ("I owe you $20 for the tickets.", "I owe you twenty dollars for the tickets"),
    ("Room 204 is booked until noon.", "Room two hundred and four is booked until noon."),
    ("The train gets in at 6:15.", "The train gets in at 6.15"),
    ("I'll be there at 6:00.", "I'll be there at six o'clock."),
    ("OK, the Q3 slides.", "Okay, the Q three slides"),
])
def test_normalize_makes_spoken_and_written_forms_equal(reference: str, transcript: str):
    assert normalize(reference) == normalize(transcript)


def test_normalize_keeps_real_differences():
    assert normalize("at 5:30") != normalize("at 5:40")
    assert normalize("Tell Priya") != normalize("Tell Maya")


def _summary_ok(summary: dict) -> None:
    assert summary["n"] >= 1
    assert summary["p95"] >= summary["p50"] > 0
    assert summary["max"] >= summary["p95"]


def test_recognition_is_measured_on_the_clip_the_endpointer_cuts():
    speech = utterance(HibariTts(), "Running ten minutes late.")
    endpointer = Endpointer(SileroVad())
    clean, noisy = as_cut(endpointer, speech), as_cut(endpointer, speech, snr_db=10, seed=3)
    for cut in (clean, noisy):  # the speech, with a few tenths of a second either side, not the second of padding
        assert len(speech) < len(cut) < len(speech) + 0.9 * 16_000
    assert np.array_equal(as_cut(endpointer, speech), clean)  # nothing carried over from the clip before
    assert as_cut(endpointer, np.zeros(16_000, np.float32)).size == 0


@pytest.mark.model
def test_tiny_run_has_the_documented_keys_and_sane_values(tmp_path: Path):
    phrases = [p for p in COMMAND_PHRASES if p[0] is Command.SEND]  # "Send." and "Okay, send it."
    # One llama.cpp thread: on a busy 2-core machine two threads can stall for many seconds (see the README).
    options = Options(replies=REPLIES[:2], voices=["hibari"], command_phrases=phrases, arrivals=2, dictations=1,
                      dictation_set=DICTATIONS[:2], engine_threads=1, progress=False)
    json_path, png_path = save(run(options), tmp_path)
    assert png_path.stat().st_size > 0
    report = json.loads(json_path.read_text())

    for key in ("benchmark", "date", "quick", "seed", "machine", "versions", "setup", "stt_wer", "commands",
                "latency", "goals", "dictation_set"):
        assert key in report
    machine = report["machine"]
    assert machine["cpu"] and machine["cores"] >= 1
    assert len(machine["load_avg_start"]) == 3 and len(machine["load_avg_end"]) == 3
    for package in ("faster-whisper", "onnxruntime", "hibari-tts"):
        assert report["versions"][package]

    wer = report["stt_wer"]
    assert 0 <= wer["overall"]["wer"] <= 1
    assert set(wer["by_condition"]) == {"clean", "noise_10dB"}
    for cells in wer["by_voice"].values():
        assert all(0 <= cell["wer"] <= 1 for cell in cells.values())
    assert len(wer["utterances"]) == 2 * 2  # 2 replies x (clean, noisy)
    for other in ("unprimed", "baseline"):  # the same audio, the same cells
        assert set(wer[other]["by_voice"]) == set(wer["by_voice"]) and 0 <= wer[other]["overall"]["wer"] <= 1
    assert wer["stt_time_ratio_to_baseline"] > 0
    assert all(row["answers"] for row in wer["utterances"])

    commands = report["commands"]
    assert 0 <= commands["accuracy"] <= 1 and commands["n"] == 2 * 2
    assert commands["alone"] is not None and commands["carrier"] is not None
    false_accept = commands["false_accept"]
    assert 0 <= false_accept["rate"] <= 1 and false_accept["n"] == 4

    arrival = report["latency"]["arrival"]
    assert arrival["inserted"] == 2
    _summary_ok(arrival["summary"])
    assert arrival["goal_p95_s"] == 0.8 and isinstance(arrival["met"], bool)

    readback = report["latency"]["readback"]
    _summary_ok(readback["summary"])
    assert readback["goal_p95_s"] == 1.2 and isinstance(readback["met"], bool)
    assert set(readback["parts"]) == {"vad", "queue", "stt", "compose", "tts", "other"}
    for trial in readback["trials"]:
        if "parts_s" in trial:  # the parts add up to the whole
            assert sum(trial["parts_s"].values()) == pytest.approx(trial["latency_s"])
            assert trial["parts_s"]["vad"] > 0 and trial["parts_s"]["stt"] >= 0 and trial["stt_s"] > 0
    assert 0 <= readback["recognized_ahead"] <= readback["timed"]
    sources = readback["compose_sources"]
    assert sources["model"] + sources["dictation"] >= 1
    assert 0 <= sources["model_share"] <= 1

    assert set(report["goals"]) == {"arrival_to_announcement_p95_s", "speech_end_to_readback_p95_s", "wer_espeak_clean",
                                    "command_accuracy_espeak_clean", "false_accepts"}
    assert not report["goals"]["wer_espeak_clean"]["met"]  # no espeak voice ran: not met, and not claimed
    dictation_set = report["dictation_set"]
    assert dictation_set["n"] == 2 and dictation_set["written"]["as_expected"] == 1.0  # the composer alone
    spoken = dictation_set["spoken"]
    assert len(spoken["rows"]) == 2 and 0 <= spoken["as_expected"] <= 1 and 0 <= spoken["primed_as_expected"] <= 1
    assert spoken["rows"][0]["answers"] and {"plain", "primed"} <= set(spoken["rows"][0])
