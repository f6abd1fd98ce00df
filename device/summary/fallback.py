"""The fallback summary: the thread's key messages, attributed, in their own words.

What the wearer hears when no model draft passed the validators, or there is no
model. It never paraphrases: it picks whole sentences (or the leading clauses of a
long one) from the messages and keeps them in order, each said under its sender's
name ("Mom asks: could you do it?", "Dad: I can't, my train gets in at 6:15."),
the wearer's own as "You: ...". So it is grounded by construction, which
``check_grounding`` confirms before it is returned, and it is attributed, so no
sentence ever changes who says what.

Two things keep it right, not only grounded. A clause whose time, day or amount a
later message replaced ("7 was full", "moved to Friday") is never picked: it is
true of the past, and would be heard as the plan; nor is a sentence about what a
later correction takes back ("Correction: you don't need to bring a mat after all").
And chat filler ("ok", "haha", "hi Alex!", a closing ", Alex.") is cut, so the words
left are the ones that carry the message.

What it picks: first whatever the thread asks of the wearer, said as asked of them
("Olu asks you: ..."), however long the thread; then, greedily, the sentence that adds
the most per word said (questions, requests, settled plans, the latest messages, and
names, times, days and amounts not yet said), until the word budget is spent.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from itertools import islice

from tidings.device.messages import Message
from tidings.device.summary.grounding import MONTH_NAME, check_grounding, values
from tidings.device.summary.relations import (find_value, marked_old, stale_values, taken_back, topic_stems,
                                              whole_value)
from tidings.device.summary.replies import Ask, find_ask
from tidings.device.summary.spoken import for_speech
from tidings.device.summary.verbatim import strip_vocative
from tidings.device.summary.wearer import Wearer

# Possessive quantifiers: long whitespace runs must not cost quadratic backtracking.
# A title's full stop does not end a sentence: "with Dr. Varga" stays whole.
_TITLES = "".join(rf"(?<!\b{t}\.)" for t in ("Dr", "Mr", "Mrs", "Ms", "Mx", "St", "Prof", "Jr", "Sr", "No", "vs"))
_SENTENCE_BREAK = re.compile(rf"(?<=[.!?…؟。！？]){_TITLES}\s++|\n\s*+")
# A clause ends at , ; or : plus a space, but not inside "20, 000" or "Note: 5".
_CLAUSE_BREAK = re.compile(r"(?<=[,;:])\s++(?!\d)")
# ... but a stale value may be a clause of its own: "dinner at Osteria Lupo, 7pm, on friday".
_STALE_CLAUSE_BREAK = re.compile(r"(?<=[,;:])\s++")
_WORD = re.compile(r"\w+")
_NONSPACE = re.compile(r"\S+")
_ENDS_SENTENCE = re.compile(r"[.!?…؟。！？]['\")\]]*$")
_QUESTION = re.compile(r"[?؟？]")
_REQUEST = re.compile(
    r"\b(?:(?:can|could|would|will) (?:you|u)|please|pls|plz|let me know|lmk|(?:need|want) you to"
    r"|don'?t forget|remember to|make sure)\b", re.IGNORECASE)
_URGENT = re.compile(
    r"\b(?:urgent|asap|emergency|immediately|right away|right now|leak\w*|hospital|deadline)\b",
    re.IGNORECASE)
_SPECIFIC = re.compile(
    r"\d|\b(?:today|tonight|tomorrow|yesterday|monday|tuesday|wednesday|thursday|friday|saturday"
    r"|sunday|weekend|noon|midnight|january|february|march|april|may|june|july|august|september"
    r"|october|november|december)\b", re.IGNORECASE)
_IMPERATIVES = frozenset("""
    send bring call come meet check buy get pick grab book remember don't dont let tell ask text
    take wait stop go join read sign pay email reply confirm cancel move keep leave
    """.split())
_STOPWORDS = frozenset("""
    a an the and or but so to of in on at for with is are was were be been am i you he she it
    we they me him her us them my your his its our their this that there here what do did does
    have has had not no yes ok okay lol haha hahaha hi hey hello thanks thank just too very
    u ur im i'm it's will would can could should oh yeah yep sure well
    """.split())
_ATTACHMENT = re.compile(r"<\w+>")
# A message that settles the plan: what it says is what stands.
_SETTLED = re.compile(r"\b(?:confirmed|booked|final|settled|deal|done|agreed|sorted|fixed|so it'?s|that'?s it)\b",
                      re.IGNORECASE)
# Someone turning an ask down.
_REFUSES = re.compile(r"\b(?:can['’]?t|cannot|won['’]?t|not able|no way|sorry,? no)\b", re.IGNORECASE)
# The wearer taking something on.
_COMMITS = re.compile(r"\b(?:i['’]ll|i will|i can|i['’]m going to|i['’]m taking|booked)\b", re.IGNORECASE)
# A message changing the plan: "change: we start 12:00", "I changed the pickup to 17:00".
_CHANGES = re.compile(r"\b(?:instead|chang(?:e|ed|es)|moved?|now|actually|correction|postponed|rescheduled|pushed"
                      r"|switch(?:ed)?|new)\b", re.IGNORECASE)
# A whitespace-free run longer than this (a URL, a pasted blob) cannot be read aloud.
_MAX_TOKEN_CHARS = 40
# Per message, only this many sentences from each end are candidates: a megabyte
# message must not cost quadratic work, and its middle is rarely the point.
_EDGE_SENTENCES = 200
# Only a sentence's opening can be read out within the word budget, so only it is scored.
_SCORED_CHARS = 1000
_MIN_SCORE = 1.0


# Chat filler in front of what a sentence says: interjections, greetings, thanks. Never "yes", "no" or
# "not": an answer or a negation is what a sentence says ("no need to reply" must not become "need to reply").
_FILLER = re.compile(
    r"^(?:(?:ok(?:ay)?|k|hmm+|ugh+|uh+|oh+|ah+|argh+|lol|haha\w*|wow|cool|nice|legend|thanks?(?: you)?|thx|ty|hi|hey"
    r"|hello|yo|guys)\b(?:\s+(?:all|everyone|everybody|folks|team)\b)?[\s,.!:;-]*)+", re.IGNORECASE)


@dataclass(frozen=True)
class _Unit:
    order: tuple[int, int]  # (message position, sentence position): chronology
    sender: str
    to: str | None  # whom the sentence is put to: "you" (the wearer), another's name, or nobody in particular
    question: bool
    text: str
    words: int
    content: frozenset[str]
    score: float
    specifics: frozenset[str] = frozenset()


def _score(text: str, position: float) -> tuple[float, frozenset[str]]:
    tokens = [t.casefold() for t in _WORD.findall(text)]
    content = frozenset(t for t in tokens if t not in _STOPWORDS and len(t) > 1)
    score = min(len(content), 10) / 5
    score += 2.0 * bool(_QUESTION.search(text)) + 2.0 * bool(_REQUEST.search(text))
    score += 2.5 * bool(_URGENT.search(text)) + 1.5 * bool(_SPECIFIC.search(text))
    score += 1.0 * bool(tokens and tokens[0] in _IMPERATIVES) + 1.5 * bool(_SETTLED.search(text))
    if len(tokens) < 3:
        score -= 1.0
    if _ATTACHMENT.fullmatch(text):
        score -= 3.0
    return score + 0.5 * position, content


def _others_addressed(thread: Sequence[Message]) -> dict[str, re.Pattern[str]]:
    """Per sender, a pattern for the first names of everyone else, as they open an ask: "Tom, you in goal?",
    "And Vinzenz, can you do the speech?"."""
    names = {m.sender: m.sender.split()[0] for m in thread if m.sender.split()}
    patterns = {}
    for sender in names:
        others = sorted({re.escape(n) for s, n in names.items() if s != sender and len(n) > 1}, key=len, reverse=True)
        if others:
            patterns[sender] = re.compile(rf"(?:^|(?<=[,;:]\s))(?:(?:and|so|also|oh|ok|btw)\s+)?@?({'|'.join(others)})\b,?\s+(?=(?:you|u|can|could|would"
                                          rf"|will|pls|please|are|r|do)\b)", re.IGNORECASE)
    return patterns


# Said to the wearer, "you" means the wearer: a question put to someone else names them instead.
_INVERTED = {"are": "is", "were": "was", "have": "has", "do": "does", "r": "is", "aren't": "isn't",
             "don't": "doesn't", "haven't": "hasn't", "weren't": "wasn't"}
# "can you do" stays "can Tom do": after a modal the verb does not agree with its subject.
_AFTER_NO_MODAL = "".join(rf"(?<!\b{m} )" for m in ("can", "could", "would", "will", "should", "shall", "may", "might",
                                                   "must", "did", "does", "do"))
_SECOND_PERSON = re.compile(r"\b(?:(?P<aux>are|were|have|do|r|aren't|don't|haven't|weren't)\s+(?:you|u)\b"
                            r"|(?:you|u)(?P<clitic>'re|'ve|'ll|'d)|(?P<poss>your|ur|yours)\b"
                            rf"|{_AFTER_NO_MODAL}(?:you|u)\s+(?P<verb>are|were|have|do|don't|aren't|want|need|know|think|like|mean|go)\b"
                            r"|(?:you|u))\b", re.IGNORECASE)
_GROUP_YOU = re.compile(r"\b(?:you|u) (?:all|guys|both|two|lot)\b|\by['’]all\b", re.IGNORECASE)
# "you take 50": a verb `_about` cannot make agree with a name ("Chidi take") leaves the sentence as written.
_YOU_THEN_OTHER_VERB = re.compile(r"(?<!['’])\b(?:you|u)\s+(?!(?:are|were|have|do|don't|aren't|want|need|know|think"
                                  r"|like|mean|go|up|in|on|at|to|for|back|there|too|later|soon|then|now)\b)[a-z]+",
                                  re.IGNORECASE)
_CLITICS = {"'re": "'s", "'ve": " has", "'ll": " will", "'d": " would"}
_THIRD = {"are": "is", "were": "was", "have": "has", "do": "does", "don't": "doesn't", "aren't": "isn't", "go": "goes"}


def _about(sentence: str, name: str) -> str:
    """`sentence`, put to `name`, with its "you" as `name`: "No worries, you in goal?" → "…, Tom in goal?"."""
    def third(match: re.Match[str]) -> str:
        if aux := match.group("aux"):
            return f"{_INVERTED[aux.lower()]} {name}"
        if clitic := match.group("clitic"):
            return name + _CLITICS[clitic.lower()]
        if match.group("poss"):
            return f"{name}'s"
        if verb := match.group("verb"):
            return f"{name} {_THIRD.get(verb.lower(), verb + 's')}"
        return name
    return _SECOND_PERSON.sub(third, sentence.replace("’", "'"))


def _units(thread: Sequence[Message], wearer: Wearer) -> list[_Unit]:
    units: list[_Unit] = []
    stale = stale_values(thread)
    first_stale = min(stale, default=len(thread))
    taken = taken_back(thread)
    others_addressed = _others_addressed(thread)
    for i, message in enumerate(thread):
        mine = wearer.is_sender(message.sender)
        sender = "You" if mine else _sender(message)
        sentences = [s.strip() for s in _SENTENCE_BREAK.split(message.text)]
        indexed = [(j, s) for j, s in enumerate(sentences) if s]
        if len(indexed) > 2 * _EDGE_SENTENCES:
            indexed = indexed[:_EDGE_SENTENCES] + indexed[-_EDGE_SENTENCES:]
        # A reply to a question usually carries the decision the question asked for ...
        answers = i > 0 and thread[i - 1].sender != message.sender and "?" in thread[i - 1].text
        # ... so a request a later message answers is worth less than the answer: "can you both leave after
        # lunch?" is settled by "yes" and "I can't before 16:00".
        answered = any(later.sender != message.sender for later in thread[i + 1:i + 3])
        # The first name of whom the wearer answers, if they answer someone.
        answers_another = mine and i > 0 and not wearer.is_sender(thread[i - 1].sender)
        previous = _sender(thread[i - 1]).split() if answers_another else []
        answering = previous[0] if previous else None
        for j, sentence in indexed:
            sentence = _without_stale(sentence, stale.get(i, ()))
            if not sentence or taken[i] & topic_stems(sentence) or _only_history(sentence):
                continue
            # Only a sentence's opening can be read within the word budget: only it is cleaned.
            sentence = _FILLER.sub("", sentence[:4 * _SCORED_CHARS])
            to_wearer, sentence = (False, sentence) if mine else strip_vocative(sentence, wearer)
            to = "you" if to_wearer else None
            # Heard after "You:", the wearer's own "you" would be the wearer: it is whom they answered.
            if (mine and answering is not None and not _GROUP_YOU.search(sentence)
                    and not _YOU_THEN_OTHER_VERB.search(sentence)):
                sentence = _about(sentence, answering)
            if to is None and (pattern := others_addressed.get(message.sender)) is not None:
                if (named := pattern.search(sentence)) is not None:
                    to = named.group(1)
                    sentence = _about(sentence[:named.start()] + sentence[named.end():], to)
            sentence = for_speech(_FILLER.sub("", sentence)).strip(" ,;")
            words = sentence.split()
            if len(words) < 2 or max(map(len, words)) > _MAX_TOKEN_CHARS:
                continue
            sentence = sentence[:1].upper() + sentence[1:]
            score, content = _score(sentence[:_SCORED_CHARS], i / max(len(thread) - 1, 1))
            score += 1.0 * (answers and j == indexed[0][0] and len(words) >= 3)
            # The latest messages hold the plan as it stands; the wearer's own words they know, and of their own
            # questions only the answers are news.
            score += 1.5 * (i / max(len(thread) - 1, 1)) - 1.5 * (mine and "?" in sentence)
            # ... though what they took on is what they must remember: "I'll take them on tuesday".
            score -= 1.0 * (mine and not _COMMITS.search(sentence))
            # Once a time, day or amount was replaced, the message replacing it is the plan as it stands.
            score += 2.0 * (i > first_stale and bool(_CHANGES.search(sentence))
                            and bool(_SPECIFIC.search(sentence) or _CAPITALIZED.search(sentence)))
            request = not mine and "?" in sentence and bool(_REQUEST.search(sentence))
            score -= 1.0 * (answered and request)
            score -= 1.0 * (request and any(later.sender != message.sender and _REFUSES.search(later.text)
                                            for later in thread[i + 1:i + 3]))
            # A question put to someone else by name that they turned down: their refusal is the news.
            score -= 1.5 * (to not in (None, "you") and not wearer.is_named_in(to) and "?" in sentence and any(
                _sender(later).split()[0].casefold() == to.casefold() and _REFUSES.search(later.text)
                for later in thread[i + 1:]))
            # The thread's opening line says what it is about ("Greta's 30th: dinner at Osteria Lupo?").
            score += 0.75 * (i == 0 and j == indexed[0][0] and len(thread) > 2)
            units.append(_Unit((i, j), sender, to, bool(_QUESTION.search(sentence)), sentence, len(words),
                               content, score, _specifics(sentence)))
    return units


def _only_history(sentence: str) -> bool:
    """Whether every time, day and amount `sentence` names it also calls off ("saver fares on the 7:32 are
    gone"): it tells why the plan changed, and a later message says what it is now."""
    found = [v for v in values(sentence) if v.kind in ("time", "weekday", "date", "money")]
    return bool(found) and all(marked_old(sentence, v.text) for v in found)


# What goes with a replaced value when it is left out: its preposition and the rest of its date or rate.
_VALUE_TAIL = (rf"(?:[\s/]+(?:\d{{1,2}}(?:st|nd|rd|th)?|{MONTH_NAME}|month|week|night|day|pp|ppl|people|persons"
               r"|guests|each|per \w+)\b)*")
_ADJUNCT_PREPOSITIONS = ("on", "at", "for", "by", "from", "to")
# A month the value parser does not see as a value ("up to €75 from January"): it may have changed with the
# value, so a clause that keeps one is dropped whole.
_MONTH = re.compile(rf"\b(?:{MONTH_NAME})\b", re.IGNORECASE)
# A clause cut short of what it said: "the trip is", "we meet at".
_DANGLING = re.compile(r"\b(?:is|are|was|were|be|will|the|a|an|to|at|on|for|by|from|of|and|or|in)\W*$",
                       re.IGNORECASE)


def _less_value(clause: str, value: str) -> str:
    """`clause` without `value` where it is an adjunct ("could you talk on Wed 2 Dec at 8:45?" less "Wed" is
    "could you talk at 8:45?"), or unchanged when it is not one."""
    own = value.split()[0].casefold() in _ADJUNCT_PREPOSITIONS  # "at 8:45"
    preposition = "" if own else rf"\b(?:{'|'.join(_ADJUNCT_PREPOSITIONS)})[ \t]+(?:the[ \t]+)?"
    pattern = rf"\s*{preposition}{whole_value(value)}{_VALUE_TAIL}"
    return re.sub(pattern, "", clause, count=1, flags=re.IGNORECASE)


def _without_stale(sentence: str, stale: Collection[str]) -> str:
    """`sentence` less what states a value a later message replaced as if it still held ("dinner friday,
    7pm" once 7pm was full; not "25th, not 24th"): the value with its preposition where it is an adjunct
    ("the rent goes up to €75 from January" → "the rent goes up"), else its clause. What is left is still
    true; "" when nothing is. A short label whose clause goes goes with it: of "Tiago: deploy 6:00, Alex:
    sign-off" with 6:00 replaced, "Alex: sign-off" is left, not "Tiago, Alex: sign-off"; a longer one says
    what the rest is about and stays ("field trip this sunday: bring a tripod!")."""
    def current(clause: str) -> bool:
        return all(find_value(clause, value) < 0 or marked_old(clause, value) for value in stale)

    if current(sentence):
        return sentence
    clauses = _STALE_CLAUSE_BREAK.split(sentence)
    for i, clause in enumerate(clauses):
        reduced = clause
        for value in sorted(stale, key=len, reverse=True):
            if find_value(reduced, value) >= 0 and not marked_old(reduced, value):
                reduced = _less_value(reduced, value)
        if (reduced != clause and current(reduced) and len(reduced.split()) >= 3 and not _MONTH.search(reduced)
                and not _DANGLING.search(reduced)):
            clauses[i] = reduced
    kept = [current(c) for c in clauses]
    for i in range(len(clauses) - 2, -1, -1):
        kept[i] = kept[i] and not (clauses[i].endswith(":") and len(clauses[i].split()) <= 2 and not kept[i + 1])
    return " ".join(c for c, keep in zip(clauses, kept) if keep).rstrip(",;: ")


def _sender(message: Message) -> str:
    return " ".join(message.sender.split()) or "Someone"


def _fit(text: str, budget: int) -> str:
    """The longest prefix of ``text`` within ``budget`` words, cut in the original
    string (whitespace untouched): at the last clause end if one fits, else after
    the last word that fits; the cut is marked with "…"."""
    words = list(islice(_NONSPACE.finditer(text), budget + 1))
    if len(words) <= budget:
        return text
    limit = words[max(budget, 1) - 1].end()
    end = limit
    for clause in _CLAUSE_BREAK.finditer(text):
        if clause.start() > limit:
            break
        end = clause.start()
    return text[:end].rstrip(",;:-– ") + "…"


# A name, time, day or amount the summary has not yet said is what the wearer most needs from a sentence.
_SPECIFIC_WEIGHT = 0.5
_CAPITALIZED = re.compile(r"(?<=\s)[A-ZÀ-ÖØ-Þ][\w'’-]+")


def _specifics(text: str) -> frozenset[str]:
    """The names (capitalized words past the first) and the times, days and amounts `text` states."""
    found = {f"{v.kind}:{_alnum(v.text)}" for v in values(text)}
    found |= {w.casefold().removesuffix("'s").removesuffix("’s") for w in _CAPITALIZED.findall(text)}
    return frozenset(found)


def _gain(unit: _Unit, said: set[str], said_specifics: set[str]) -> float:
    """Score less the share of the unit's content words already said, plus the specifics it adds."""
    overlap = len(unit.content & said) / len(unit.content) if unit.content else 1.0
    return unit.score - 2.0 * overlap + _SPECIFIC_WEIGHT * min(len(unit.specifics - said_specifics), 4)


def _density(unit: _Unit, said: set[str], said_specifics: set[str]) -> float:
    """Gain per square root of the words it costs: a long sentence must carry more to be worth its time,
    and the budget is better spent on several short ones (measured on the dev suites, against gain alone)."""
    return _gain(unit, said, said_specifics) / (unit.words + len(_label(unit).split())) ** 0.5


def _alnum(text: str) -> str:
    return "".join(ch for ch in text.casefold() if ch.isalnum())


def _the_ask(units: list[_Unit], ask: Ask) -> _Unit | None:
    """The sentence that asks the wearer what the thread wants of them: the latest question or request put
    to them by name since they last wrote ("Alex, can you bring the PA?"), else the one `find_ask` found."""
    if ask.kind == "none":
        return None
    last_mine = max((u.order[0] for u in units if u.sender == "You"), default=-1)
    put_to_them = [u for u in units if u.to == "you" and u.order[0] > last_mine
                   and (u.question or _REQUEST.search(u.text))]
    if put_to_them:
        return max(put_to_them, key=lambda u: u.order)
    question = _alnum(ask.question)
    found = [u for u in units if u.sender != "You" and question and (text := _alnum(u.text))
             and (question in text or text in question)]
    return max(found, key=lambda u: u.order) if found else None


def _select(units: list[_Unit], max_words: int, ask: Ask = Ask("none")) -> list[tuple[_Unit, str]]:
    chosen: list[tuple[_Unit, str]] = []
    said: set[str] = set()
    said_specifics: set[str] = set()
    budget = max_words
    pool = sorted(units, key=lambda u: -u.score)[:300]
    # What the wearer is asked is never left out, and is said as asked of them: it is what they must act on.
    asked = _the_ask(units, ask)
    # A thread that fits whole is said whole (less what a later message replaced): nothing needs leaving out.
    if sum(u.words + len(_label(u).split()) for u in units) <= max_words:
        return [(replace(u, to="you", question=True) if asked is not None and u.order == asked.order else u, u.text)
                for u in sorted(units, key=lambda u: u.order)]
    if asked is not None:
        pool = [u for u in pool if u.order != asked.order]
    while budget > 1:
        if asked is not None:
            best, asked = replace(asked, to="you", question=True), None
        elif pool:
            best = max(pool, key=lambda u: _density(u, said, said_specifics))
            pool.remove(best)
            if chosen and _gain(best, said, said_specifics) < _MIN_SCORE:
                break
        else:
            break
        cost = len(_label(best).split())
        if best.words + cost > budget:
            if chosen:
                continue
            text = _fit(best.text, budget - cost)
        else:
            text = best.text
        chosen.append((best, text))
        said |= best.content
        said_specifics |= best.specifics
        budget -= len(text.split()) + cost
    return sorted(chosen, key=lambda c: c[0].order)


def _label(unit: _Unit) -> str:
    """How a unit is attributed when it opens a run: "Mom:", "Mom asks you:", "Ravi asks Tom:", "You:"."""
    if unit.question and unit.sender != "You":
        return f"{unit.sender} asks{f' {unit.to}' if unit.to else ''}:"
    return f"{unit.sender}, to {unit.to}:" if unit.to else f"{unit.sender}:"


def _render(chosen: list[tuple[_Unit, str]]) -> str:
    parts: list[str] = []
    last_sender = None
    for unit, text in chosen:
        if not _ENDS_SENTENCE.search(text):
            text = text.rstrip(",;:-– ") + "."
        if unit.sender == last_sender and unit.to is None and not unit.question:
            parts.append(text)
        else:
            parts.append(f"{_label(unit)} {text}")
        last_sender = unit.sender
    return " ".join(parts)


def _who_sent(thread: Sequence[Message], one: str, many: str, max_words: int = 40) -> str:
    """An honest stand-in when nothing can be quoted: who sent what (or only that someone did,
    when the names would not fit the budget or read as facts: senders called "1" and "000")."""
    senders = list(dict.fromkeys(_sender(m) for m in thread))
    if not senders:
        return "No messages."
    names = ", ".join(senders[:3]) + (" and others" if len(senders) > 3 else "")
    said = f"{names} sent {one if len(thread) == 1 else many}."
    if len(said.split()) <= max(max_words, 4) + 4 and check_grounding(said, thread):
        return said
    return f"{'Someone' if len(senders) == 1 else 'Several people'} sent {one if len(thread) == 1 else many}."


def fallback_summary(messages: Sequence[Message], max_words: int = 40, wearer: Wearer = Wearer()) -> str:
    """The key messages of ``messages``, attributed, in at most about ``max_words`` words."""
    thread = [m for _, m in sorted(enumerate(messages), key=lambda im: (im[1].sent_at, im[0]))]
    units = _units(thread, wearer)
    if not units:
        if all(not m.text.strip() for m in thread):
            return _who_sent(thread, "an empty message", "empty messages", max_words)
        return _who_sent(thread, "a message", "messages", max_words)
    chosen = _select(units, max(max_words, 4), find_ask(thread, wearer) if wearer else Ask("none"))
    summary = _render(chosen)
    # Verbatim text is grounded by construction; this guards the construction.
    report = check_grounding(summary, thread)
    if not report:
        chosen = [c for c in chosen if not any(fact in c[1] for fact in report.unsupported)]
        summary = _render(chosen)
        if not chosen or not check_grounding(summary, thread):
            return _who_sent(thread, "a message", "messages", max_words)
    return summary
