"""Grounding validator: does a summary only state facts its source messages support?

A summary read aloud to a wearer must not invent who, how many, when or what
day. ``check_grounding`` extracts the people (capitalised names), numbers,
times of day and dates a summary mentions and checks each one against the
source messages' text and senders. It is an entity-level check, not paraphrase
detection: verbs and ordinary nouns are never judged.

Equivalent forms count as support ("three" ~ "3", "6pm" ~ "18:00" ~ "at 6"),
and so do sound calendar inferences from a message's ``sent_at`` (a message sent
on Thursday saying "tomorrow" supports "Friday", and the other way round).
Sources are scanned once into sets, so a megabyte of text costs linear time.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from .messages import Message


@dataclass(frozen=True)
class GroundingReport:
    ok: bool
    unsupported: tuple[str, ...]  # unsupported facts, spelled as in the summary

    def __bool__(self) -> bool:
        return self.ok


_UNITS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen".split())}
_UNITS.update({w: 10 * i for i, w in enumerate(
    "twenty thirty forty fifty sixty seventy eighty ninety".split(), start=2)})
_ORDINALS = {w: i for i, w in enumerate(
    "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth "
    "thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth".split(), start=1)}
_ORDINALS.update({w: 10 * i for i, w in enumerate(
    "twentieth thirtieth fortieth fiftieth sixtieth seventieth eightieth ninetieth".split(), start=2)})
_SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9, "dozen": 12}
# Alone, these are pronouns or idioms far more often than counts ("one of them",
# "for the first time", "wait a second"), so a summary may use them freely.
_UNCHECKED_NUMBER_WORDS = frozenset({"one", "first", "second"})

_WEEKDAYS = {name: i for i, names in enumerate((
    "monday mon", "tuesday tue tues", "wednesday wed", "thursday thu thur thurs",
    "friday fri", "saturday sat", "sunday sun")) for name in names.split()}
# "sat" and "sun" are everyday words; they name days only capitalised or after these.
_DAY_CUE = re.compile(r"(?:on|this|next|last|by|till|until|from)\s+$", re.IGNORECASE)
_MONTHS = {name: i for i, names in enumerate((
    "january jan", "february feb", "march", "april apr", "may", "june jun", "july jul",
    "august aug", "september sep sept", "october oct", "november nov", "december dec"),
    start=1) for name in names.split()}
# Month names that are also everyday words only count as dates when capitalised.
_AMBIGUOUS_MONTHS = frozenset({"may", "march"})
_RELATIVE = {
    "today": "today", "tonight": "tonight", "tonite": "tonight", "tomorrow": "tomorrow",
    "tmrw": "tomorrow", "tmr": "tomorrow", "tomorow": "tomorrow", "tommorow": "tomorrow",
    "tommorrow": "tomorrow", "2morrow": "tomorrow", "tomo": "tomorrow", "2moro": "tomorrow",
    "2day": "today", "tday": "today", "2nite": "tonight", "2night": "tonight",
    "yesterday": "yesterday", "yestarday": "yesterday", "yday": "yesterday",
    "weekend": "weekend", "this morning": "today", "this afternoon": "today",
    "this evening": "tonight", "next week": "next week", "last week": "last week",
}
_RELATIVE_OFFSET = {"yesterday": -1, "today": 0, "tonight": 0, "tomorrow": 1}
_NAMED_TIMES = {"noon": 720, "midday": 720, "midnight": 0}
# After these a bare number is read as an hour ("at 6", "by seven").
_TIME_PREPOSITIONS = "at|by|till|until|til|before|after|around|from|between"
# Units chat glues to a number ("10min", "5km"); the number is still a number.
_UNIT_SUFFIXES = "min|mins|h|hr|hrs|km|kg|m|cm|g|l|ml|yo|x|d|w|y|mb|gb|lbs|eur|usd|pln|zl"


def _alternation(words: Iterable[str]) -> str:
    return "|".join(sorted((re.escape(w).replace(r"\ ", r"\s+") for w in words), key=len, reverse=True))


_NUMBER_WORD = _alternation([*_UNITS, *_ORDINALS, *_SCALES])
_HOUR_WORD = _alternation(w for w, v in _UNITS.items() if 1 <= v <= 12)
_HOUR = rf"(?:\d{{1,2}}|{_HOUR_WORD})"
_ENTITY = re.compile(rf"""
    (?P<iso>\b\d{{4}}-\d{{1,2}}-\d{{1,2}}\b)
  | (?P<ampm>\b(?:(?P<ah0>\d{{1,2}})(?:[:.](?P<am0>[0-5]\d))?\s?[-–]\s?)?
        (?P<ah>\d{{1,2}})(?:[:.](?P<am>[0-5]\d))?\s?(?P<ap>[ap])\.?\s?m\b\.?)
  | (?P<clock>\b(?P<ch>[01]?\d|2[0-3])[:h](?P<cm>[0-5]\d)\b(?!:\d))
  | (?P<oclock>\b(?P<oh>{_HOUR})\s?o'?\s?clock\b)
  | (?P<past>\b(?P<pf>half|quarter|\d{{1,2}}(?=\s+min))\s+(?:min(?:ute)?s?\s+)?(?P<pr>past|to)\s+(?P<ph>{_HOUR})\b)
  | (?P<named>\b(?:noon|midday|midnight)\b)
  | (?P<slash>\b(?P<s1>\d{{1,2}})/(?P<s2>\d{{1,2}})(?:/\d{{2,4}})?\b)
  | (?P<dots>\b(?P<t1>\d{{1,2}})\.(?P<t2>\d{{1,2}})\.\d{{2,4}}\b)
  | (?P<bare>\b(?:{_TIME_PREPOSITIONS})\s+(?P<bh>{_HOUR})(?:[.:,](?P<bm>[0-5]\d))?
        (?:\s?[-–]\s?(?P<bh2>\d{{1,2}})(?:[.:,](?P<bm2>[0-5]\d))?)?(?:ish)?
        (?=\s*(?:$|[^\w\s'](?!\d)|(?:today|tonight|tomorrow|then|ok|okay|is|works|sharp|latest|at
        |on|in|and|or|if|so|but|please|pls|we|i|you|maybe|tho|ish)\b)))
  | (?P<num>(?<!\w)(?P<cur>[$£€]\s?)?(?P<digits>\d{{1,3}}(?:,\s?\d{{3}})+(?:\.\d+)?|\d+(?:\.\d+)?)
        (?P<suf>%|k|st|nd|rd|th|s|ish|{_UNIT_SUFFIXES})?(?!\w)(?:\s(?P<scale>hundred|thousand|million|billion)\b)?)
  | (?P<words>\b(?:{_NUMBER_WORD})(?:(?:\s+and\s+|[\s-]+)(?:{_NUMBER_WORD}))*\b)
  | (?P<day>\b(?P<dn>{_alternation(_WEEKDAYS)})s?\b)
  | (?P<month>\b(?P<mn>{_alternation(_MONTHS)})\b)
  | (?P<rel>\b(?:{_alternation(_RELATIVE)})\b)
""", re.IGNORECASE | re.VERBOSE)
_WORD = re.compile(r"\w+(?:'\w+)*")
_RUN_SPLIT = re.compile(r"[\s-]+")
_CLITIC = re.compile(r"'(?:s|ll|re|d|ve|m)?$")
# Chat shorthand for proper nouns that summaries spell out.
_ALIASES = {"fb": "facebook", "insta": "instagram", "ig": "instagram", "yt": "youtube",
            "xmas": "christmas", "bday": "birthday"}
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})

# Capitalised words that are not names: sentence starters and the everyday nouns
# that summaries capitalise. A capitalised word found in the sources is fine anyway.
COMMON_WORDS = frozenset("""
    a an the this that these those there here it its it's i i'm i'll i'd i've me my mine
    we us our ours you your yours he him his she her hers they them their theirs one ones
    someone somebody something anyone anybody anything everyone everybody everything
    nobody nothing none no yes not all both each either neither every some any many much
    more most few several other others another such same own only just also too very
    so then than as if when while where why how what which who whom whose whether because
    since though although however but and or nor yet for of to in on at by from with without
    into onto about above below over under after before during until till through between
    against among around across along near up down out off again still even ever never
    always often sometimes usually maybe perhaps probably apparently eventually finally
    meanwhile later soon now once instead otherwise besides unfortunately luckily hopefully
    actually anyway anyways oh ok okay hi hello hey bye thanks thank please sorry well yeah
    is are was were be been being am do does did done doing have has had having will would
    shall should can could may might must let lets get gets got go goes went gone going
    come comes came make makes made take takes took give gives gave say says said tell
    tells told ask asks asked want wants wanted need needs needed like likes liked love
    loves loved know knows knew think thinks thought see sees saw look looks looked feel
    feels felt try tries tried call calls called send sends sent meet meets met buy buys
    bought pay pays paid bring brings brought keep keeps kept leave leaves left find finds
    found help helps helped use uses used work works worked play plays played watch
    watches watched wait waits waited agree agrees agreed plan plans planned decide
    decides decided remind reminds reminded invite invites invited offer offers offered
    suggest suggests suggested hope hopes hoped
    meeting dinner lunch breakfast party trip holiday holidays vacation weekend work job
    school class exam test home house flat car bus train plane flight ticket tickets
    money phone message messages photo photos picture pictures video file link email
    mum mom dad mother father parents brother sister son daughter wife husband boyfriend
    girlfriend friend friends family kids children baby boss team group everyone
    internet tv pc ps dvd cd sms gps ok lol omg wtf btw asap fyi
    mr mrs ms dr miss sir madam new year people according following earlier unlike despite
    afterwards generally recently currently initially originally eventually nevertheless
    therefore thus hence moreover furthermore overall regarding concerning considering given
    due together next last first second third later already almost
    """.split())


def _norm(text: str) -> str:
    return text.translate(_APOSTROPHES)


def _word_keys(token: str, source: bool = False) -> set[str]:
    """Spellings under which a word may be looked up or indexed: without a clitic
    ("Tom's", "Owen'll"), without a plural or dropped-apostrophe "s" ("at Janes"),
    without accents; sources also index apostrophe-separated parts and aliases."""
    base = token.casefold()
    keys = {base, _CLITIC.sub("", base)}
    keys.update(k[:-1] for k in tuple(keys) if len(k) >= 3 and k.endswith("s"))
    if source:
        keys.update(base.split("'"))
        keys.update(_ALIASES[k] for k in tuple(keys) if k in _ALIASES)
    keys.update("".join(c for c in unicodedata.normalize("NFKD", k) if not unicodedata.combining(c))
                for k in tuple(keys))
    keys.discard("")
    return keys


def _hours(h: int, minute: int = 0) -> set[int]:
    """An hour said without am/pm could be either half of the day."""
    if h > 24 or minute > 59:
        return set()
    if 1 <= h <= 12:
        return {(h % 12) * 60 + minute, (h % 12 + 12) * 60 + minute}
    return {(h % 24) * 60 + minute}


def _int(text: str) -> int:
    text = text.casefold()
    return int(text) if text.isdecimal() else _UNITS[text]


def _number_run(text: str) -> tuple[float, list[float], list[str]]:
    """Value of a run like "twenty-five" plus its words' individual values."""
    words = [w for w in _RUN_SPLIT.split(text.casefold()) if w and w != "and"]
    total = current = 0
    singles: list[float] = []
    for w in words:
        if w in _SCALES:
            current = max(current, 1) * _SCALES[w]
            if _SCALES[w] >= 1000:
                total, current = total + current, 0
        else:
            value = _UNITS.get(w, _ORDINALS.get(w, 0))
            current += value
            singles.append(value)
    return float(total + current), singles, words


@dataclass
class _Entity:
    kind: str  # "time", "bare" (hour or number), "number", "date", "weekday", "month", "rel", "name"
    text: str
    start: int
    end: int
    times: set[int] = field(default_factory=set)
    numbers: set[float] = field(default_factory=set)  # any one of these supports it
    parts: set[float] = field(default_factory=set)    # or all of these together
    key: object = None


_CLOCK_DECIMAL = re.compile(r"(\d{1,2})\.([0-5]\d)")


def _entity(m: re.Match[str], text: str) -> list[_Entity]:
    kind, raw, g = m.lastgroup, m.group(0), m.group
    e = _Entity("time", raw.strip(), m.start(), m.end())
    if kind == "ampm":
        # Each end of a range like "6-7pm" is a separate claim.
        pm = 12 if g("ap").lower() == "p" else 0
        ends = [_Entity("time", raw.strip(), m.start(), m.end()) for h in (g("ah0"), g("ah")) if h]
        for end, (h, minute) in zip(ends, [(g("ah0"), g("am0"))] * (len(ends) - 1) + [(g("ah"), g("am"))]):
            h, minute = int(h), int(minute or 0)
            end.times = {(h % 12 + pm) * 60 + minute} if h <= 12 else _hours(h, minute)
            end.numbers = {float(h)}
        return ends
    elif kind == "clock":
        e.times, e.numbers = _hours(int(g("ch")), int(g("cm"))), {float(int(g("ch")))}
    elif kind == "oclock":
        e.times, e.numbers = _hours(_int(g("oh"))), {float(_int(g("oh")))}
    elif kind == "past":
        frac = g("pf").lower()
        minutes = 30 if frac == "half" else 15 if frac == "quarter" else int(frac)
        shift = minutes if g("pr").lower() == "past" else -minutes
        e.times = {(t + shift) % 1440 for t in _hours(_int(g("ph")))}
    elif kind == "named":
        e.times = {_NAMED_TIMES[raw.lower()]}
    elif kind == "bare":
        e.kind, e.times, e.numbers = "bare", _hours(_int(g("bh")), int(g("bm") or 0)), {float(_int(g("bh")))}
        if g("bh2"):
            return [e, _Entity("bare", e.text, e.start, e.end, _hours(int(g("bh2")), int(g("bm2") or 0)),
                               {float(g("bh2"))})]
    elif kind in ("slash", "dots", "iso"):
        a, b = (g("s1"), g("s2")) if kind == "slash" else (g("t1"), g("t2")) if kind == "dots" \
            else raw.split("-")[1:]
        e.kind, e.key = "date", frozenset({(int(a), int(b)), (int(b), int(a))})
    elif kind == "num":
        value = float(re.sub(r"[,\s]", "", g("digits")))
        suffix = (g("suf") or "").lower()
        e.kind, e.numbers = "number", {value}
        if suffix == "k" or g("scale"):
            e.numbers.add(value * _SCALES.get((g("scale") or "").lower(), 1000))
        elif suffix in ("st", "nd", "rd", "th"):
            e.key = "ordinal"
        elif not suffix and not g("cur") and (clock := _CLOCK_DECIMAL.fullmatch(g("digits"))):
            # "10.30" in chat is at least as often a time as a decimal.
            e.kind, e.times = "bare", _hours(int(clock[1]), int(clock[2]))
    elif kind == "words":
        value, singles, words = _number_run(raw)
        e.kind, e.numbers, e.parts = "number", {value}, set(singles)
        if len(words) == 1 and (words[0] in _UNCHECKED_NUMBER_WORDS or _SCALES.get(words[0], 0) > 12):
            e.key = "unchecked"
        elif words[-1] in _ORDINALS:
            e.key = "ordinal"
    elif kind == "day":
        name = g("dn").lower()
        if name in ("sat", "sun") and not raw[0].isupper() and not _DAY_CUE.search(text, max(0, m.start() - 8), m.start()):
            return []
        e.kind, e.key = "weekday", _WEEKDAYS[name]
    elif kind == "month":
        e.kind, e.key = "month", _MONTHS[g("mn").lower()]
        if g("mn").lower() in _AMBIGUOUS_MONTHS and not raw[0].isupper():
            e.key = "unchecked"
    else:
        e.kind, e.key = "rel", _RELATIVE[" ".join(raw.lower().split())]
    return [e]


def _entities(text: str) -> list[_Entity]:
    return [e for m in _ENTITY.finditer(text) for e in _entity(m, text)]


@dataclass
class _Support:
    """Everything the sources state or soundly imply, as lookup sets."""
    words: set[str] = field(default_factory=set)
    numbers: set[float] = field(default_factory=set)
    times: set[int] = field(default_factory=set)
    weekdays: set[int] = field(default_factory=set)
    months: set[int] = field(default_factory=set)
    relative: set[str] = field(default_factory=set)
    dates: set[tuple[int, int]] = field(default_factory=set)
    days_of_month: set[float] = field(default_factory=set)
    ordinals: set[float] = field(default_factory=set)

    def add_text(self, text: str, sent_at) -> None:
        text = _norm(text)
        for token in set(_WORD.findall(text)):
            self.words |= _word_keys(token, source=True)
        found = _entities(text)
        short = len(found) <= 2 and len(text) <= 24
        named_days: set[int] = set()
        relative: set[str] = set()
        for e in found:
            if e.text.casefold() in ("first", "second"):  # "wait a second" is no 2, but "2nd" is
                self.ordinals |= e.numbers
            else:
                self.numbers |= e.numbers | e.parts
            self.times |= e.times
            for t in e.times:
                self.numbers |= {float(t // 60), float(t // 60 % 12 or 12)}
            if e.kind == "number" and short:
                # A lone "6" or "six?" answering "what time?" names an hour.
                for n in e.numbers | e.parts:
                    if n == int(n):
                        self.times |= _hours(int(n))
            if e.kind == "weekday":
                named_days.add(e.key)
            elif e.kind == "month" and e.key != "unchecked":
                self.months.add(e.key)
            elif e.kind == "date":
                self.dates |= e.key
                self.months |= {a for a, _ in e.key if 1 <= a <= 12}
                self.days_of_month |= {float(b) for _, b in e.key}
            elif e.kind == "rel":
                relative.add(e.key)
        self.weekdays |= named_days
        evening = any(t >= 17 * 60 for e in found for t in e.times)
        if sent_at is not None:
            sent = sent_at.date()
            for word in relative & _RELATIVE_OFFSET.keys():
                day = sent + timedelta(days=_RELATIVE_OFFSET[word])
                self.weekdays.add(day.weekday())
                self.months.add(day.month)
                self.days_of_month.add(float(day.day))
                self.dates |= {(day.month, day.day), (day.day, day.month)}
            for word, offset in _RELATIVE_OFFSET.items():
                if (sent + timedelta(days=offset)).weekday() in named_days:
                    relative.add(word)
        if "tonight" in relative:
            relative.add("today")
        if "today" in relative and evening:
            relative.add("tonight")
        self.relative |= relative

    def supports(self, e: _Entity) -> bool:
        if e.kind == "time":
            return bool(e.times & self.times)
        if e.kind == "bare":
            return bool(e.times & self.times or e.numbers & self.numbers)
        if e.kind == "number":
            if e.key == "unchecked" or e.numbers & self.numbers:
                return True
            if e.key == "ordinal" and e.numbers & (self.ordinals | self.days_of_month):
                return True
            return bool(e.parts) and e.parts <= self.numbers
        if e.kind == "date":
            return bool(e.key & self.dates)
        if e.kind == "weekday":
            return e.key in self.weekdays
        if e.kind == "month":
            return e.key == "unchecked" or e.key in self.months
        if e.kind == "rel":
            if e.key == "weekend":
                return "weekend" in self.relative or bool(self.weekdays & {5, 6})
            return e.key in self.relative
        return not _word_keys(e.text).isdisjoint(self.words)


def _names(summary: str, taken: list[_Entity]) -> list[_Entity]:
    """Capitalised words outside other entities that are not everyday words."""
    names: list[_Entity] = []
    spans = iter(taken)
    span = next(spans, None)
    for m in _WORD.finditer(summary):
        while span is not None and span.end <= m.start():
            span = next(spans, None)
        if span is not None and span.start < m.end():
            continue
        token = m.group(0)
        # Single letters are initials, list labels or SAMSum's "A"/"B" speakers.
        if len(token) < 2 or not token[0].isupper():
            continue
        if _word_keys(token, source=True).isdisjoint(COMMON_WORDS):
            names.append(_Entity("name", token, m.start(), m.end()))
    return names


def check_grounding(summary: str, sources: Sequence[Message]) -> GroundingReport:
    """Which people, numbers, times and dates in ``summary`` no source supports."""
    summary = _norm(summary or "")
    claims = _entities(summary)
    claims += _names(summary, claims)
    if not claims:
        return GroundingReport(True, ())
    support = _Support()
    for message in sources:
        support.add_text(message.sender, None)
        support.add_text(message.text, message.sent_at)
    unsupported = dict.fromkeys(e.text for e in sorted(claims, key=lambda e: e.start)
                                if not support.supports(e))
    return GroundingReport(not unsupported, tuple(unsupported))
