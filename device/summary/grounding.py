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
from datetime import datetime, timedelta

from tidings.device.messages import Message


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
_RELATIVE = {alias.replace("_", " "): word for word, aliases in (
    ("today", "today 2day tday this_morning this_afternoon"),
    ("tonight", "tonight tonite 2nite 2night this_evening"),
    ("tomorrow", "tomorrow tmrw tmr tomorow tommorow tommorrow tomo 2morrow 2moro"),
    ("yesterday", "yesterday yestarday yday"),
    ("weekend", "weekend"), ("next week", "next_week"), ("last week", "last_week"),
) for alias in aliases.split()}
_RELATIVE_OFFSET = {"yesterday": -1, "today": 0, "tonight": 0, "tomorrow": 1}
_NAMED_TIMES = {"noon": 720, "midday": 720, "midnight": 0}
# After these a bare number is read as an hour ("at 6", "by seven").
_TIME_PREPOSITIONS = ("at", "by", "till", "until", "til", "before", "after", "around", "from", "between")
# Units chat glues to a number ("10min", "5km"); the number is still a number.
_UNIT_SUFFIXES = "min|mins|h|hr|hrs|km|kg|m|cm|g|l|ml|yo|x|d|w|y|mb|gb|lbs|eur|usd|pln|zl"


# Horizontal whitespace: an entity never spans lines, since a summary quoting the
# lines separately must read the same entities as the source.
_H = r"[^\S\r\n]"


def _alternation(words: Iterable[str]) -> str:
    """A regex matching any of ``words``, built as a trie so that a scan costs a
    character comparison or two per word rather than one per listed word."""
    trie: dict[str, dict] = {}
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict[str, dict]) -> str:
        branches = [(_H + "+" if ch == " " else re.escape(ch)) + build(child)
                    for ch, child in sorted(node.items()) if ch]
        if not branches:
            return ""
        if "" in node:
            return f"(?:{'|'.join(branches)})?"
        return branches[0] if len(branches) == 1 else f"(?:{'|'.join(branches)})"

    return build(trie)


_NUMBER_WORD = _alternation([*_UNITS, *_ORDINALS, *_SCALES])
# Any month's name or abbreviation, for the relation checks and the fallback ("3 Dec", "from January").
MONTH_NAME = _alternation(_MONTHS)
_HOUR_WORD = _alternation(w for w, v in _UNITS.items() if 1 <= v <= 12)
_HOUR = rf"(?:\d{{1,2}}|{_HOUR_WORD})"
_LETTER_KEYWORDS = _alternation([*_UNITS, *_ORDINALS, *_SCALES, *_WEEKDAYS, *_MONTHS, *_NAMED_TIMES,
                                 *_TIME_PREPOSITIONS, "half", "quarter",
                                 *(w for w in _RELATIVE if w[0].isalpha())])
# Every alternative starts a word; the shared lookbehind and first-character split
# keep a megabyte scan fast (each alternative would otherwise be tried at every character).
# ASCII: Unicode case folding would let "ſ" or "K" (Kelvin) spell a keyword.
_ENTITY = re.compile(rf"""(?<!\w)(?:(?=[\d$£€])(?:
    (?P<iso>\d{{4}}-\d{{1,2}}-\d{{1,2}}\b)
  | (?P<ampm>(?:(?P<ah0>\d{{1,2}})(?:[:.](?P<am0>[0-5]\d))?{_H}?[-–]{_H}?)?
        (?P<ah>\d{{1,2}})(?:[:.](?P<am>[0-5]\d))?{_H}?(?P<ap>[ap])(?:\.{_H}?m\b\.?|m\b))
  | (?P<clock>(?P<ch>[01]?\d|2[0-3])[:h](?P<cm>[0-5]\d)\b(?!:\d))
  | (?P<slash>(?P<s1>\d{{1,2}})/(?P<s2>\d{{1,2}})(?:/\d{{2,4}})?\b)
  | (?P<dots>(?P<t1>\d{{1,2}})\.(?P<t2>\d{{1,2}})\.\d{{2,4}}\b)
  | (?P<dclock>(?P<dh>\d{{1,2}}){_H}?o'?{_H}?clock\b)
  | (?P<dpast>(?P<dm>\d{{1,2}}){_H}+min(?:ute)?s?{_H}+(?P<dpr>past|to){_H}+(?P<dph>{_HOUR})\b)
  | (?P<drel>(?:{_alternation(w for w in _RELATIVE if w[0].isdigit())})\b)
  | (?P<num>(?P<cur>[$£€]{_H}?)?(?P<digits>\d{{1,3}}(?:,{_H}?\d{{3}})+(?:\.\d+)?|\d+(?:\.\d+)?)
        (?P<suf>%|k|st|nd|rd|th|s|ish|{_UNIT_SUFFIXES})?(?!\w)
        (?:{_H}(?P<scale>hundred|thousand|million|billion)\b)?)
  ) | (?=(?:{_LETTER_KEYWORDS})s?\b)(?:
    (?P<oclock>(?P<oh>{_HOUR_WORD}){_H}?o'?{_H}?clock\b)
  | (?P<past>(?P<pf>half|quarter){_H}+(?P<pr>past|to){_H}+(?P<ph>{_HOUR})\b)
  | (?P<named>(?:noon|midday|midnight)\b)
  | (?P<bare>(?:{_alternation(_TIME_PREPOSITIONS)}){_H}+(?P<bh>{_HOUR})(?:[.:,](?P<bm>[0-5]\d))?
        (?:{_H}?[-–]{_H}?(?P<bh2>\d{{1,2}})(?:[.:,](?P<bm2>[0-5]\d))?)?(?:ish)?
        (?={_H}*(?:$|\n|[^\w\s'](?!\d)|(?:today|tonight|tomorrow|then|ok|okay|is|works|sharp|latest|at
        |on|in|and|or|if|so|but|please|pls|we|i|you|maybe|tho|ish)\b)))
  | (?P<words>(?:{_NUMBER_WORD})(?:(?:{_H}+and{_H}+|(?:{_H}|-)+)(?:{_NUMBER_WORD}))*\b)
  | (?P<day>(?P<dn>{_alternation(_WEEKDAYS)})s?\b)
  | (?P<month>(?P<mn>{_alternation(_MONTHS)})\b)
  | (?P<rel>(?:{_alternation(w for w in _RELATIVE if w[0].isalpha())})\b)
  ))""", re.ASCII | re.IGNORECASE | re.VERBOSE)
_WORD = re.compile(r"\w+(?:'\w+)*")
_RUN_SPLIT = re.compile(r"[\s-]+")
_CLITIC = re.compile(r"'(?:s|ll|re|d|ve|m)?$")
# Chat shorthand for proper nouns that summaries spell out.
_ALIASES = {"fb": "facebook", "insta": "instagram", "ig": "instagram", "yt": "youtube",
            "xmas": "christmas", "bday": "birthday"}
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})

# Capitalised words that are not names: sentence starters and the everyday nouns
# summaries capitalise. Lookups also drop a final "s", so "Gets" finds "get".
COMMON_WORDS = frozenset("""
    a an the this that these those there here it its i me my mine we us our ours you your yours
    he him his she her hers they them their theirs one someone somebody something anyone anybody
    anything everyone everybody everything nobody nothing none no yes not all both each either
    neither every some any many much more most few several other another such same own only just
    also too very so then than as if when while where why how what which who whom whose whether
    because since though although however but and or nor yet for of to in on at by from with
    without into onto about above below over under after before during until till through
    between against among around across along near up down out off again still even ever never
    always often sometimes usually maybe perhaps probably apparently eventually finally meanwhile
    later soon now once instead otherwise besides unfortunately luckily hopefully actually anyway
    oh ok okay hi hello hey bye thank thanks please sorry well yeah is are was were be been being
    am do did done doing have had having will would shall should can could may might must let
    get got go went gone going come came make made take took give gave say said tell told ask
    asked want wanted need needed like liked love loved know knew think thought see saw look
    looked feel felt try tried call called send sent meet met buy bought pay paid bring brought
    keep kept leave left find found help helped use used work worked play played watch watched
    wait waited agree agreed plan planned decide decided remind reminded invite invited offer
    offered suggest suggested hope hoped meeting dinner lunch breakfast party trip holiday
    vacation weekend job school class exam test home house flat car bus train plane flight
    ticket money phone message photo picture video file link email mum mom dad mother father
    parent brother sister son daughter wife husband boyfriend girlfriend friend family kid
    children baby boss team group internet tv pc dvd cd sms gps lol omg wtf btw asap fyi mr mrs
    ms dr miss sir madam new year people according following earlier unlike despite afterwards
    generally recently currently initially originally nevertheless therefore thus hence moreover
    furthermore overall regarding concerning considering given due together next last first
    second third already almost sure fine good great perfect cool nice right absolutely definitely
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
    kind: str  # "time", "bare" (an hour or a count), "number", "date", "weekday", "month", "rel"
    text: str
    start: int
    end: int
    times: set[int] = field(default_factory=set)      # minutes of the day, any one supports it
    numbers: set[float] = field(default_factory=set)  # any one of these supports it
    parts: set[float] = field(default_factory=set)    # or all of these together
    key: object = None
    checked: bool = True  # False: a word that is a fact only sometimes ("one", "may")
    ordinal: bool = False


_CLOCK_DECIMAL = re.compile(r"(\d{1,2})\.([0-5]\d)")


def _entity(m: re.Match[str], text: str) -> list[_Entity]:
    kind, raw, g = m.lastgroup, m.group(0), m.group
    e = _Entity("time", raw.strip(), m.start(), m.end())
    if kind == "ampm":
        pm = 12 if g("ap").lower() == "p" else 0
        ends = [(g("ah"), g("am"))] + ([(g("ah0"), g("am0"))] if g("ah0") else [])
        # Each end of a range like "6-7pm" is a claim of its own.
        return [_Entity("time", e.text, e.start, e.end, {(int(h) % 12 + pm) * 60 + int(mm or 0)}
                        if int(h) <= 12 else _hours(int(h), int(mm or 0)), {float(h)}) for h, mm in ends]
    if kind == "bare":
        # "at 6" may be a count as much as an hour; "at 6:30" is a time.
        return [_Entity("bare" if mm is None else "time", e.text, e.start, e.end,
                        _hours(_int(h), int(mm or 0)), {float(_int(h))})
                for h, mm in ((g("bh"), g("bm")), (g("bh2"), g("bm2"))) if h]
    if kind == "clock":
        e.times, e.numbers = _hours(int(g("ch")), int(g("cm"))), {float(int(g("ch")))}
    elif kind in ("oclock", "dclock"):
        h = _int(g("oh") or g("dh"))
        e.times, e.numbers = _hours(h), {float(h)}
    elif kind in ("past", "dpast"):
        frac = (g("pf") or "").lower()
        minutes = 30 if frac == "half" else 15 if frac == "quarter" else int(g("dm"))
        shift = minutes if (g("pr") or g("dpr")).lower() == "past" else -minutes
        e.times = {(t + shift) % 1440 for t in _hours(_int(g("ph") or g("dph")))}
    elif kind == "named":
        e.times = {_NAMED_TIMES[raw.lower()]}
    elif kind in ("slash", "dots", "iso"):
        a, b = {"slash": (g("s1"), g("s2")), "dots": (g("t1"), g("t2"))}.get(kind, raw.split("-")[1:])
        e.kind, e.key = "date", frozenset({(int(a), int(b)), (int(b), int(a))})
    elif kind == "num":
        value, suffix = float(re.sub(r"[,\s]", "", g("digits"))), (g("suf") or "").lower()
        e.kind, e.numbers, e.ordinal = "number", {value}, suffix in ("st", "nd", "rd", "th")
        if suffix == "k" or g("scale"):
            e.numbers.add(value * _SCALES.get((g("scale") or "").lower(), 1000))
        elif not suffix and not g("cur") and (clock := _CLOCK_DECIMAL.fullmatch(g("digits"))):
            # "10.30" in chat is at least as often a time as a decimal.
            e.kind, e.times = "bare", _hours(int(clock[1]), int(clock[2]))
    elif kind == "words":
        value, singles, words = _number_run(raw)
        e.kind, e.numbers, e.parts, e.ordinal = "number", {value}, set(singles), words[-1] in _ORDINALS
        e.checked = len(words) > 1 or not (words[0] in _UNCHECKED_NUMBER_WORDS
                                           or _SCALES.get(words[0], 0) > 12)
    elif kind == "day":
        name = g("dn").lower()
        if name in ("sat", "sun") and not raw[0].isupper() \
                and not _DAY_CUE.search(text, max(0, m.start() - 8), m.start()):
            return []
        e.kind, e.key = "weekday", _WEEKDAYS[name]
    elif kind == "month":
        name = g("mn").lower()
        e.kind, e.key = "month", _MONTHS[name]
        e.checked = raw[0].isupper() or name not in _AMBIGUOUS_MONTHS
    else:
        e.kind, e.key = "rel", _RELATIVE[" ".join(raw.lower().split())]
    return [e]


@dataclass
class _Support:
    """Everything the sources state or soundly imply, as lookup sets."""
    words: set[str] = field(default_factory=set)
    numbers: set[float] = field(default_factory=set)
    ordinals: set[float] = field(default_factory=set)
    times: set[int] = field(default_factory=set)
    weekdays: set[int] = field(default_factory=set)
    months: set[int] = field(default_factory=set)
    dates: set[tuple[int, int]] = field(default_factory=set)
    relative: set[str] = field(default_factory=set)

    def add(self, text: str, sent_at: datetime | None) -> None:
        text = _norm(text)
        for token in set(_WORD.findall(text)):
            self.words |= _word_keys(token, source=True)
        seen: set[str] = set()
        found: list[_Entity] = []
        for m in _ENTITY.finditer(text):
            # Repeats add nothing, and skipping them keeps entity-dense megabytes cheap.
            if m[0] not in seen or m[0] in ("sat", "sun"):  # these two depend on context
                seen.add(m[0])
                found += _entity(m, text)
        short = len(found) <= 2 and len(text) <= 24
        relative = {e.key for e in found if e.kind == "rel"}
        days = {e.key for e in found if e.kind == "weekday"}
        for e in found:
            # "wait a second" is no 2, though "second" does support "2nd".
            idiom = e.text.casefold() in ("first", "second")
            (self.ordinals if idiom else self.numbers).update(e.numbers | e.parts)
            self.times |= e.times
            self.numbers.update(float(h) for t in e.times for h in (t // 60, t // 60 % 12 or 12))
            if e.kind == "number" and short:  # a lone "6" or "six?" answering "what time?"
                self.times.update(t for n in e.numbers | e.parts if n == int(n) for t in _hours(int(n)))
            if e.kind == "month" and e.checked:
                self.months.add(e.key)
            elif e.kind == "date":
                self.dates |= e.key
                self.months |= {a for a, _ in e.key if 1 <= a <= 12}
                self.ordinals |= {float(b) for _, b in e.key}
        self.weekdays |= days
        if sent_at is not None:
            sent = sent_at.date()
            for word, offset in _RELATIVE_OFFSET.items():
                day = sent + timedelta(days=offset)
                if word in relative:  # "tomorrow", sent on Thursday: Friday the 17th
                    self.weekdays.add(day.weekday())
                    self.months.add(day.month)
                    self.ordinals.add(float(day.day))
                    self.dates |= {(day.month, day.day), (day.day, day.month)}
                if day.weekday() in days:  # "Friday", sent on Thursday: tomorrow
                    relative.add(word)
        if "tonight" in relative:
            relative.add("today")
        if "today" in relative and any(t >= 17 * 60 for e in found for t in e.times):
            relative.add("tonight")
        self.relative |= relative

    def supports(self, e: _Entity) -> bool:
        if not e.checked:
            return True
        if e.kind == "name":
            return not _word_keys(e.text).isdisjoint(self.words)
        if e.kind in ("time", "bare") and e.times & self.times:
            return True
        if e.kind in ("number", "bare") and e.numbers & self.numbers:
            return True
        if e.kind == "number":
            return bool(e.ordinal and e.numbers & self.ordinals or e.parts and e.parts <= self.numbers)
        if e.kind == "date":
            return bool(e.key & self.dates)
        if e.kind == "weekday":
            return e.key in self.weekdays
        if e.kind == "month":
            return e.key in self.months
        if e.kind == "rel" and e.key == "weekend":
            return "weekend" in self.relative or bool(self.weekdays & {5, 6})
        return e.kind == "rel" and e.key in self.relative


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
    claims = [e for m in _ENTITY.finditer(summary) for e in _entity(m, summary)]
    claims += _names(summary, claims)
    if not claims:
        return GroundingReport(True, ())
    support = _Support()
    for message in sources:
        support.add(message.sender, None)
        support.add(message.text, message.sent_at)
    unsupported = dict.fromkeys(e.text for e in sorted(claims, key=lambda e: e.start)
                                if not support.supports(e))
    return GroundingReport(not unsupported, tuple(unsupported))


@dataclass(frozen=True)
class Value:
    """A time, day, amount or count a text states, in comparable form (for the relation checks)."""
    kind: str  # "time", "weekday", "date", "money", "count", "number"
    text: str
    start: int
    end: int
    times: frozenset[int] = frozenset()
    numbers: frozenset[float] = frozenset()
    key: object = None
    share: bool = False  # an amount per person: "22.50 each"


_SHARE_AFTER = re.compile(r"^\s?(?:€|eur\b|euros?\b|\$|£)?\s?(?:each|apiece|pp\b|per (?:person|head)|a head)",
                          re.IGNORECASE)
_MONEY_AFTER = re.compile(r"^\s?(?:€|eur\b|euros?\b|\$|£|dollars?\b|pounds?\b|bucks\b)", re.IGNORECASE)
_COUNT_AFTER = re.compile(r"^\s?(?:people|ppl|persons|guests|of (?:us|you|them)|adults|kids|seats)\b", re.IGNORECASE)
_COUNT_BEFORE = re.compile(r"\b(?:for|party of|table of)\s$", re.IGNORECASE)


# A room, ward, gate or platform named by its number or letter: "ward 4C", "room 214", "gate B12".
_CODE = re.compile(r"\b(room|ward|gate|platform|track|terminal|belt|exit|seat|desk|bay|level|hall|building|block"
                   r"|unit|flat|apartment|apt|court|pitch|locker|stand|studio|lab)\s+#?([A-Z]?\d{1,4}[A-Z]?|[A-Z])\b",
                   re.IGNORECASE)
# An ordinal that names something other than a day of the month: "3rd floor", "2nd time", "Greta's 30th".
_NOT_A_DAY_AFTER = re.compile(r"^\s?(?:floor|time|place|round|grade|year|row|gear|attempt|try|birthday|anniversary"
                              r"|edition|century|class|period|stop|exit|step|option|choice|one|half|quarter)\b",
                              re.IGNORECASE)
_NOT_A_DAY_BEFORE = re.compile(r"['’]s\s$|\bmy\s$|\bher\s$|\bhis\s$|\btheir\s$|\bour\s$", re.IGNORECASE)


def values(text: str, sent_at: datetime | None = None) -> list[Value]:
    """The times, days, amounts, counts, days of the month ("the 24th") and numbered rooms, gates or
    platforms (kind "code") `text` states; "tomorrow" becomes a weekday given `sent_at`."""
    text = _norm(text)
    found = []
    codes = [(m.start(), m.end(), m) for m in _CODE.finditer(text)]
    for start, end, m in codes:
        found.append(Value("code", m.group(0), start, end, key=(m.group(1).casefold(), m.group(2).upper())))
    for m in _ENTITY.finditer(text):
        for e in _entity(m, text):
            if not e.checked or any(start <= e.start and e.end <= end for start, end, _ in codes):
                continue
            kind, key = e.kind, e.key
            if kind in ("time", "bare"):
                kind = "time" if e.times else "number"
            elif kind == "number":
                after, before = text[e.end:e.end + 16], text[max(0, e.start - 12):e.start]
                if e.text[:1] in "$£€" or _MONEY_AFTER.match(after) or _SHARE_AFTER.match(after):
                    kind = "money"
                elif _COUNT_AFTER.match(after) or _COUNT_BEFORE.search(before):
                    kind = "count"
                elif (e.ordinal and e.text[:1].isdigit() and len(e.numbers) == 1 and 1 <= min(e.numbers) <= 31
                      and not _NOT_A_DAY_AFTER.match(after) and not _NOT_A_DAY_BEFORE.search(before)):
                    kind, key = "date", frozenset((month, int(min(e.numbers))) for month in range(1, 13))
            elif kind == "rel":
                if sent_at is None or key not in _RELATIVE_OFFSET:
                    continue
                kind, key = "weekday", (sent_at.date() + timedelta(days=_RELATIVE_OFFSET[key])).weekday()
            elif kind == "month":
                continue
            share = kind == "money" and bool(_SHARE_AFTER.match(text[e.end:e.end + 16]))
            found.append(Value(kind, e.text, e.start, e.end, frozenset(e.times), frozenset(e.numbers), key, share))
    return sorted(found, key=lambda v: v.start)


def same_value(a: Value, b: Value) -> bool:
    if {a.kind, b.kind} == {"time", "number"}:  # "7 was full" speaks of "7pm"
        time, number = (a, b) if a.kind == "time" else (b, a)
        return any(n == int(n) and 1 <= n <= 24 and int(n) % 12 in {t // 60 % 12 for t in time.times}
                   for n in number.numbers)
    if a.kind != b.kind:
        return False
    if a.kind == "time":
        return bool(a.times & b.times)
    if a.kind in ("weekday", "date", "code"):
        return bool(a.key & b.key) if a.kind == "date" else a.key == b.key
    return bool(a.numbers & b.numbers)
