from __future__ import annotations

import json
import random
import re
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tidings.device.summary.grounding import GroundingReport, check_grounding
from tidings.device.messages import Message

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
THURSDAY = datetime(2024, 5, 16, 9, 30, tzinfo=timezone.utc)


def msg(text: str, sender: str = "Priya", at: datetime = THURSDAY) -> Message:
    return Message("m", "t", sender, text, at)


def dialogue_messages(dialogue: str) -> list[Message]:
    """SAMSum "Name: text" lines as messages, one minute apart."""
    lines = [line for line in re.split(r"\r?\n", dialogue) if line.strip()]
    out = []
    for i, line in enumerate(lines):
        sender, sep, text = line.partition(": ")
        out.append(Message(str(i), "t", sender.strip() if sep else "?", text if sep else line,
                           THURSDAY + timedelta(minutes=i)))
    return out


def test_faithful_summary_passes():
    thread = [msg("The review moved to Friday at 2pm", "Priya"),
              msg("ok, I'll send the 3 slides by Thursday", "Tom")]
    report = check_grounding("Priya moved the review to Friday at 2pm. Tom will send three slides "
                             "by Thursday.", thread)
    assert report == GroundingReport(True, ())
    assert report


def test_invented_name_is_rejected_and_named():
    thread = [msg("I'll bring the cake", "Tom"), msg("great!", "Priya")]
    report = check_grounding("Tom and Gregory will bring the cake.", thread)
    assert not report
    assert report.unsupported == ("Gregory",)


def test_invented_time_is_rejected():
    thread = [msg("dinner at 6pm?", "Tom"), msg("yes", "Priya")]
    assert check_grounding("Dinner is at 6pm.", thread)
    report = check_grounding("Dinner is at 7pm.", thread)
    assert report.unsupported == ("7pm",)


def test_invented_number_is_rejected():
    thread = [msg("we need 3 chairs and 12 cups", "Tom")]
    assert check_grounding("Tom needs 3 chairs and 12 cups.", thread)
    assert check_grounding("Tom needs 4 chairs and 12 cups.", thread).unsupported == ("4",)
    assert check_grounding("Tom needs five chairs.", thread).unsupported == ("five",)


@pytest.mark.parametrize("summary,source", [
    ("Tom has three kids.", "I have 3 kids"),
    ("Tom has 3 kids.", "I have three kids"),
    ("It costs $1,200.", "it's 1200 dollars"),
    ("Twenty-five people came.", "25 people came"),
    ("It is 20% off.", "twenty percent off"),
    ("Tom came 2nd.", "I came second"),
    ("They need a dozen eggs.", "get 12 eggs"),
    ("It costs 15k.", "it's 15,000"),
])
def test_number_forms_support_each_other(summary, source):
    assert check_grounding(summary, [msg(source, "Tom")])


@pytest.mark.parametrize("source", ["see you at 18:00", "see you at 6", "six", "6 pm works",
                                    "around 6ish?", "at 6 o'clock"])
def test_equivalent_times_support_6pm(source):
    assert check_grounding("They meet at 6pm.", [msg(source)])


def test_bare_hour_supports_both_halves_of_the_day_but_explicit_times_do_not():
    assert check_grounding("They meet at 6am.", [msg("see you at 6")])
    assert not check_grounding("They meet at 6am.", [msg("see you at 6pm")])
    assert not check_grounding("They meet at 18:30.", [msg("see you at 6pm")])
    assert check_grounding("They meet at half past six.", [msg("6:30 ok?")])
    assert check_grounding("They meet at noon.", [msg("12pm at the cafe")])


def test_tomorrow_and_weekday_inference_works_both_ways():
    sent_thursday = [msg("the review is tomorrow")]
    assert check_grounding("The review is on Friday.", sent_thursday)
    assert not check_grounding("The review is on Saturday.", sent_thursday)
    named = [msg("the review is on Friday")]
    assert check_grounding("The review is tomorrow.", named)
    assert not check_grounding("The review is tomorrow.", [msg("the review is on Saturday")])
    sent_friday = [msg("the review is on Friday", at=THURSDAY + timedelta(days=1))]
    assert check_grounding("The review is today.", sent_friday)
    assert not check_grounding("The review is tomorrow.", sent_friday)


def test_tonight_follows_from_today_and_an_evening_time_only():
    assert check_grounding("They meet tonight.", [msg("let's meet today at 8pm")])
    assert not check_grounding("They meet tonight.", [msg("let's meet today at 8am")])
    assert check_grounding("They meet today.", [msg("see you tonight")])
    assert check_grounding("They meet at the weekend.", [msg("how about Saturday?")])


def test_dates_are_checked():
    assert check_grounding("The party is on May 5th.", [msg("party on the 5th of May")])
    assert not check_grounding("The party is in June.", [msg("party on the 5th of May")])
    assert check_grounding("The party is on 5/3.", [msg("party on 3/5")])
    assert check_grounding("They meet next week.", [msg("let's meet next week")])
    assert not check_grounding("They meet next week.", [msg("let's meet this week")])


def test_sentence_starters_and_everyday_words_are_not_names():
    report = check_grounding("The meeting moved. They agreed. Dinner is off. I think Meeting rooms "
                             "are booked.", [msg("ok", "Sam")])
    assert report.ok, report.unsupported
    assert not check_grounding("Gregory agreed.", [msg("ok", "Sam")])


def test_names_match_case_insensitively_possessives_and_senders():
    thread = [msg("ask jake for the laptop", "Ben"), msg("sure", "#Person1#")]
    assert check_grounding("Ben wants Jake's laptop. #Person1# agrees.", thread)
    assert check_grounding("Ben wants Jakes laptop.", thread)
    assert check_grounding("#Person2# agrees.", thread).unsupported == ("Person2",)


def test_empty_summary_and_empty_sources():
    assert check_grounding("", []) == GroundingReport(True, ())
    assert check_grounding("the meeting moved", []).ok
    assert check_grounding("Tom moved it.", []).unsupported == ("Tom",)


def test_unicode_emoji_and_rtl_text():
    thread = [msg("🎉 שלום مرحبا Zoë kommt um 18:00 ✔︎", "Zoë")]
    assert check_grounding("Zoë: 🎉 שלום مرحبا at 6pm", thread)
    assert check_grounding("Zoe kommt.", thread)
    assert check_grounding("٣ 🎉 ſunday K", thread) is not None  # odd characters must not crash


def test_megabyte_source_is_fast():
    big = ("lorem ipsum 42 dolor, at 6pm on Friday Tom said 🎉 שלום. " * 20000)[:1_000_000]
    start = time.perf_counter()
    report = check_grounding("Tom said 42 at 6pm on Friday.", [msg(big)])
    elapsed = time.perf_counter() - start
    assert report.ok
    assert elapsed < 3.0, f"{elapsed:.2f}s for a 1 MB source"


# --- calibration on real human summaries (SAMSum validation only) -------------

MUTANT_NAMES = ["Gregory", "Beatrice", "Ximena", "Oswald", "Thaddeus", "Winifred", "Lucian",
                "Marguerite", "Ignatius", "Philippa", "Rosalind", "Barnaby"]
NUMBER_WORDS = "zero one two three four five six seven eight nine ten eleven twelve".split()
TIME_HOUR = re.compile(r"\b(\d{1,2})(?=(?::\d\d)?\s?(?:[ap]\.?m\b|o'clock))|(?<=\bat )(\d{1,2})\b",
                       re.IGNORECASE)
NUMBER = re.compile(r"(?<![\w:.,$£€])(\d+)(?![\w:.,%]|\s?(?:[ap]\.?m\b|o'clock))"
                    r"|\b(two|three|four|five|six|seven|eight|nine|ten)\b", re.IGNORECASE)


def _mutations(record: dict, rng: random.Random):
    """Unfaithful edits of a reference summary: a name not in the dialogue, an
    hour or a number that the dialogue never mentions in any spelling."""
    dialogue, summary = record["dialogue"], record["summary"]
    said = {t.casefold() for t in re.findall(r"\w+", dialogue)} | set(re.findall(r"\d+", dialogue))

    def unsaid(v: int) -> bool:
        return not {str(v), str(v + 12), NUMBER_WORDS[v] if v < len(NUMBER_WORDS) else ""} & said

    senders = {line.partition(": ")[0].strip() for line in re.split(r"\r?\n", dialogue)}
    named = sorted(n for n in senders if re.fullmatch(r"[A-Z][a-z]+", n) and re.search(rf"\b{n}\b", summary))
    if named:
        old = rng.choice(named)
        new = rng.choice([n for n in MUTANT_NAMES if n.casefold() not in said])
        yield "name", re.sub(rf"\b{old}\b", new, summary)
    for kind, pattern, top in (("time", TIME_HOUR, 12), ("number", NUMBER, 60)):
        found = list(pattern.finditer(summary))
        if not found:
            continue
        m = rng.choice(found)
        group = 1 if m.group(1) else 2
        if m.group(group).isdigit():
            options = [str(v) for v in range(1, top) if unsaid(v)]
        else:
            options = [NUMBER_WORDS[v] for v in range(2, len(NUMBER_WORDS)) if unsaid(v)]
        if options:
            yield kind, summary[:m.start(group)] + rng.choice(options) + summary[m.end(group):]


@pytest.fixture(scope="module")
def samsum_validation() -> list[dict]:
    path = DATA / "samsum_validation.json"
    if not path.exists():
        pytest.skip(f"calibration data not found at {path}")
    return json.loads(path.read_text(encoding="utf-8"))


def test_calibration_reference_summaries_pass_and_mutations_fail(samsum_validation):
    passed, rejected, mutated = 0, {}, {}
    rng = random.Random(0)
    for record in samsum_validation:
        thread = dialogue_messages(record["dialogue"])
        if not check_grounding(record["summary"], thread):
            continue
        passed += 1
        for kind, mutant in _mutations(record, rng):
            mutated[kind] = mutated.get(kind, 0) + 1
            rejected[kind] = rejected.get(kind, 0) + (not check_grounding(mutant, thread))
    pass_rate = passed / len(samsum_validation)
    rejection_rate = sum(rejected.values()) / sum(mutated.values())
    print(f"reference pass rate {pass_rate:.3f}; mutation rejection {rejection_rate:.3f} "
          f"over {mutated}")
    # Measured: 0.945 pass (773/818); 1.000 rejection (913 mutants).
    assert pass_rate >= 0.92
    assert rejection_rate >= 0.97
    assert all(mutated.get(kind, 0) >= 50 for kind in ("name", "time", "number"))
