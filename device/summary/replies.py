"""Reply options from what the thread asks of the wearer.

An option is something the wearer would send as it is, so it is built from the
ask, not free-written: a yes/no question gets one accepting and one declining
option in the asker's own words turned round ("can you pick him up?" → "Yes, I
can pick him up." / "Sorry, I can't pick him up."), plus one that defers; a
choice gets one option per named alternative ("Tuesday at 9:15 works for me.");
a time or an open question gets options that promise nothing the wearer did not
decide, and the model's proposals where it has one; nothing asked, no options.

Every option, whoever wrote it, passes `problem_with_option` before it is
offered: at most 15 words, grounded (no name, number, time or place the thread
does not have), distinct from the others, a sentence the wearer could send (not
about themselves in the third person, not a line of the thread echoed back).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from tidings.device.messages import Message
from tidings.device.summary.grounding import check_grounding
from tidings.device.summary.triage import QUESTION, REQUEST, SENTENCE_BREAK, unanswered
from tidings.device.summary.verbatim import strip_vocative
from tidings.device.summary.wearer import Wearer

AskKind = Literal["yesno", "choice", "time", "open", "none"]
MAX_OPTION_WORDS = 15

DEFER = "Let me check and get back to you."

# A question word opening the sentence or its last clause ("Alex, you know her best, what would she like?").
_WH = re.compile(r"(?:^|[,;:]\s*)\W*(?:so\W+|and\W+|ok\W+|also\W+)?(?:what|where|who|whom|whose|why|how|which)\b"
                 r"(?!\s+about\b)", re.IGNORECASE)  # "how about Friday?" proposes: a yes or a no
_WHEN = re.compile(r"\b(?:when|what time|which day|what day|how soon|how long|until when)\b", re.IGNORECASE)
# "X or Y?" names the alternatives; these endings only soften a yes/no question.
_OR_TAIL = re.compile(r"^(?:not|no|nah|what|whatever|something|anything|so|later|else|never|sooner|maybe)\b",
                      re.IGNORECASE)
_CLAUSE_END = re.compile(
    r"\s*(?:[,;(—–]|\s-\s|\b(?:since|because|cause|cuz|as|so|if|while|coz|bc|then|and then)\b)", re.IGNORECASE)
# The words up to the end of the sentence: what is asked ("can you pick him up?" → "pick him up").
_PHRASE = r"(?P<vp>.+?)(?:[?!]|\.(?!\S)|$)"
_CAN = re.compile(r"\b(?:(?:can|could) (?:you|u)|(?:if|whether) (?:you|u) (?:can|could)) (?:please |pls |plz )?"
                  + _PHRASE, re.IGNORECASE)
_WILL = re.compile(r"\b(?:will|would) (?:you|u) (?:please |pls |plz )?" + _PHRASE, re.IGNORECASE)
_WANT = re.compile(r"\b(?:would (?:you|u) like|(?:do )?(?:you|u) want|fancy|up for)\b|^\W*(?:want|wanna)\b",
                   re.IGNORECASE)
_CONFIRM = re.compile(r"\bconfirm\b", re.IGNORECASE)
_ARE = re.compile(r"\b(?:are|r) (?:you|u) " + _PHRASE, re.IGNORECASE)
_MAY_I = re.compile(r"\b(?:can|could|may) i " + _PHRASE, re.IGNORECASE)
_SHALL_WE = re.compile(r"\b(?:can|could|shall|should) we " + _PHRASE, re.IGNORECASE)
_DO = re.compile(r"^\W*(?:do|did|have) (?:you|u)\b", re.IGNORECASE)
_WORKS = re.compile(r"\b(?:is|does|would|will) (?:that|this|it|\w+day|\d[\w:.]*) (?:ok|okay|fine|work|suit|good)",
                    re.IGNORECASE)
# A person's words turned round to the wearer's side: "send me your notes" → "send you my notes".
_TURN = {"me": "you", "my": "your", "mine": "yours", "us": "you", "our": "your", "ours": "yours",
         "your": "my", "ur": "my", "yours": "mine", "yourself": "myself"}
# A phrase saying "I" means the asker and "you" the wearer in either role: turning those round needs a parse.
_SPEAKER_WORDS = re.compile(r"\b(?:i|i'm|i'll|i've|i'd|we|we're|we'll|myself|you|u|you're|you'll)\b", re.IGNORECASE)
# Softeners the wearer would drop when answering: "can you still make it?" → "Yes, I can make it."
_SOFTENERS = frozenset({"still", "also", "maybe", "possibly", "perhaps", "just", "please", "pls", "plz", "actually",
                        "instead"})
# "… suit you better?", "… works for you?": the question's verb, not part of the alternative.
_CHOICE_VERB = re.compile(r"\s+(?:(?:would |will )?(?:suit|suits|work|works|is|be) (?:you |for you )?(?:better|best)?"
                          r"|(?:is )?better|(?:for|with) you)\s*$", re.IGNORECASE)
_ALTERNATIVE_STOP = re.compile(r"\b(?:on|at|for|in|about)$", re.IGNORECASE)


@dataclass(frozen=True)
class Ask:
    """What the latest unanswered message asks of the wearer."""

    kind: AskKind
    asker: str = ""
    question: str = ""  # the sentence that asks, as written
    alternatives: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReplyOptions:
    ask: Ask
    options: tuple[str, ...]
    source: Literal["model", "template", "none"]
    # Options that were written and not offered, each "check: option".
    turned_down: tuple[str, ...] = field(default=())


def find_ask(messages: Sequence[Message], wearer: Wearer = Wearer()) -> Ask:
    """What the latest message that asks anything, of those others sent since the wearer last spoke, asks.

    Within a message a question outranks a request: in "Can you come Tuesday at 9? If so, please bring
    her booklet." the wearer's answer is to the question.
    """
    for message in reversed(unanswered(messages, wearer)):
        parts = [p.strip() for p in SENTENCE_BREAK.split(message.text) if p.strip()]
        asks = [(sentence, kind) for sentence in parts
                if (kind := _kind(sentence)) != "none" and not wearer.is_named_as_recipient(sentence)]
        if asks:
            sentence, kind = ([a for a in asks if a[0].endswith("?")] or asks)[-1]
            sentence = strip_vocative(sentence, wearer)[1] or sentence  # "Alex, Dune 2 or Paddington 3?"
            alternatives = _alternatives(sentence) if kind == "choice" else ()
            return Ask(kind, message.sender, sentence, alternatives)
    return Ask("none")


def _kind(sentence: str) -> AskKind:
    question = bool(QUESTION.search(sentence))
    if question and _alternatives(sentence):
        return "choice"
    if question and _WHEN.search(sentence):
        return "time"
    if question and _WH.search(sentence):
        return "open"
    if question or REQUEST.search(sentence):
        return "yesno"
    return "none"


def _alternatives(sentence: str) -> tuple[str, ...]:
    """The named alternatives of "friday or saturday?", "thai, pizza or sushi?"; () for a yes/no "… or not?"."""
    body = _CHOICE_VERB.sub("", sentence.rstrip(" ?!."))
    head, sep, tail = body.rpartition(" or ")
    if not sep or _OR_TAIL.match(tail.strip()):
        return ()
    right = tail.strip()
    right_words = right.split()
    if not 1 <= len(right_words) <= 5:
        return ()
    # The left alternative is as long as the right one, after the last comma: "thai, pizza or sushi".
    listed = [p.strip() for p in head.rsplit(": ", 1)[-1].split(",")]  # "you're the tiebreaker: A or B"
    left_words = listed[-1].split()[-len(right_words):]
    if not left_words or _ALTERNATIVE_STOP.search(left_words[-1]):
        return ()
    earlier = [p for p in listed[:-1] if 1 <= len(p.split()) <= 4] if len(listed) > 1 else []
    alternatives = [*earlier[-2:], " ".join(left_words), right]
    alternatives = [a.strip(" .,!") for a in alternatives if a.strip(" .,!")]
    pronoun = any(_TURN.get(a.casefold()) for a in alternatives)  # "you or me?"
    if len({a.casefold() for a in alternatives}) != len(alternatives) or pronoun:
        return ()
    return tuple(alternatives)


def _turned(words: str) -> str | None:
    """The asker's verb phrase as the wearer would say it, or None when it speaks of the asker ("I", "we")."""
    phrase = [w for w in _CLAUSE_END.split(words, maxsplit=1)[0].split() if w.casefold() not in _SOFTENERS]
    if not phrase or _SPEAKER_WORDS.search(" ".join(phrase)) or len(phrase) > 7:
        return None
    return " ".join(_TURN.get(w.casefold(), w) for w in phrase)


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def template_options(ask: Ask) -> list[str]:
    """Options for `ask` built from its own words; they state nothing the thread does not."""
    if ask.kind == "yesno":
        return [*_yes_and_no(ask.question), DEFER]
    if ask.kind == "choice":
        return [f"{_capital(a)} works for me." for a in ask.alternatives[:2]] + [DEFER]
    if ask.kind == "time":
        return ["I'll let you know the time shortly.", "Any time works for me.", DEFER]
    if ask.kind == "open":
        return [DEFER, "I'll get back to you on that later.", "Good question, let me think."]
    return []


# In order, the first pattern a yes/no question matches answers it: with the asked phrase turned round
# ("{}"), or with the short pair when there is no phrase or it is too long or tangled to repeat.
_ANSWERS = (
    (_CAN, ("Yes, I can {}.", "Sorry, I can't {}."), ("Yes, I can.", "Sorry, I can't.")),
    (_MAY_I, ("Sure, you can {}.", "Sorry, you can't {}."), ("Sure, go ahead.", "Sorry, not this time.")),
    (_SHALL_WE, ("Sure, let's {}.", "Sorry, that doesn't work for me."),
     ("Sure, let's do that.", "Sorry, that doesn't work for me.")),
    (_WORKS, None, ("Yes, that works.", "Sorry, that doesn't work for me.")),
    (_WILL, ("Yes, I'll {}.", "Sorry, I won't be able to {}."), ("Yes, I will.", "Sorry, I can't.")),
    (_ARE, ("Yes, I'm {}.", "Sorry, I'm not {}."), ("Yes, I am.", "Sorry, I'm not.")),
    (_DO, None, ("Yes, I do.", "No, I don't.")),
    (REQUEST, None, ("Sure, I'll do it.", "Sorry, I can't.")),
)


def _yes_and_no(question: str) -> tuple[str, str]:
    if _WANT.search(question):
        return "Yes, please.", "No, thanks."
    if _CONFIRM.search(question) and not _CAN.search(question):
        return "Yes, confirmed.", "Sorry, that doesn't work for me."
    for pattern, with_phrase, short in _ANSWERS:
        if match := pattern.search(question):
            phrase = _turned(match.group("vp")) if with_phrase else None
            if phrase:
                accept, decline = with_phrase
                return accept.format(phrase), decline.format(phrase)
            return short
    return "Yes.", "No."


def same_words_key(option: str) -> str:
    """The words of a text, case and punctuation aside: two texts with one key say the same thing."""
    return " ".join(re.findall(r"[\w']+", option.casefold()))


def problem_with_option(option: str, messages: Sequence[Message], wearer: Wearer,
                        offered: Sequence[str] = ()) -> str | None:
    """None if the wearer could send `option` as it is in reply to this thread, else the check it fails."""
    words = option.split()
    if not 1 <= len(words) <= MAX_OPTION_WORDS:
        return f"length: {len(words)} words"
    if option[-1] not in ".!?" or re.match(r"^[\w .'-]{1,30}:\s", option):
        return "sendable: not a finished sentence of the wearer's"
    if wearer.is_named_in(option):
        return f"sendable: speaks of {wearer.name} in the third person"
    grounding = check_grounding(option, messages)
    if not grounding.ok:
        return f"grounding: {', '.join(grounding.unsupported)}"
    key = same_words_key(option)
    if key in {same_words_key(o) for o in offered}:
        return "distinct: already offered"
    if len(words) >= 5 and key in {same_words_key(m.text) for m in messages}:
        return "sendable: echoes a message of the thread"
    return None


def reply_options(messages: Sequence[Message], wearer: Wearer, count: int,
                  propose: Callable[[], Sequence[str]] | None = None) -> ReplyOptions:
    """Up to `count` options for the thread's ask: the model's proposals (`propose`) for a time or an open
    question, the ask's own options otherwise and wherever a proposal fails its checks."""
    ask = find_ask(messages, wearer)
    if ask.kind == "none":
        return ReplyOptions(ask, (), "none")
    offered: list[str] = []
    turned_down: list[str] = []
    from_model = 0

    def offer(option: str) -> bool:
        option = " ".join(option.split())
        if not option:
            return False
        problem = problem_with_option(option, messages, wearer, offered)
        if problem is not None:
            turned_down.append(f"{problem}: {option}")
            return False
        offered.append(option)
        return True

    if propose is not None and ask.kind in ("time", "open"):
        for option in propose():
            if len(offered) < count - 1 and offer(option):  # one place stays for deferring
                from_model += 1
    for option in template_options(ask):
        if len(offered) < count:
            offer(option)
    source = "model" if from_model else "template"
    return ReplyOptions(ask, tuple(offered), source if offered else "none", tuple(turned_down))
