"""From the wearer's dictation to the reply they hear read back.

Speech recognition gives the wearer's words with their ums and ahs. The reply
must read as they would type it, keep their meaning and add nothing. A
dictation said *about* the reply ("tell him I'll be home at nine", "say yes")
becomes the reply itself ("I'll be home at nine.", "Yes."): the instruction is
dropped, and the person it names, now the one reading, is turned to "you"
("tell her she can come" → "You can come."); no other word changes. When
the dictation has filler, a stammer or a self-correction, the LLM rewrites it
(it sees only the dictation, not the thread), and its
text is kept only if every person, number, time and date in it was dictated
(the grounding validator, with the dictation as the only source), it keeps
most of the dictated content words and adds none, and it is not much longer. Otherwise the
reply is the dictation itself, cleaned of filler: always the wearer's meaning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal

from tidings.device.llm.engine import Engine
from tidings.device.summary.grounding import check_grounding
from tidings.device.messages import Message
from tidings.device.llm.prompts import DICTATION_TASK, dictation_prompt
from tidings.device.summary.wearer import plain_verb

_FILLER = re.compile(r"(?<![\w'])(?:u+h+m*|u+m+|e+r+m*|a+h+|h+m+|you know|i mean)(?![\w'])[,.]?\s*", re.IGNORECASE)
_WORD = re.compile(r"[a-z0-9']+")
# Words that carry no meaning of their own, and the wearer's instructions to
# the reply ("tell her ..."): a rewrite may drop or add these.
_STOPWORDS = frozenset("""
    tell say ask let know
    a an the and or but so to of in on at for with from by is are was were be been am i i'm i'll i'd i've you it it's
    this that there here will would can could should just really very okay ok yes yeah oh well then
    me my we our us your he she they him her them his their do does did have has had not no
""".split())
KEEP_SHARE = 0.7  # of the dictation's content words the rewrite must keep
MAX_GROWTH = 1.5  # the rewrite may be at most this many times as long, plus a few words


@dataclass(frozen=True)
class ComposedReply:
    text: str
    source: Literal["model", "dictation"]
    rejected: str = ""  # why the model's rewrite was not used


def clean_dictation(text: str) -> str:
    """The dictation without filler, with a capital and a final full stop."""
    text = " ".join(_FILLER.sub("", text).split())
    text = re.sub(r"\s+([,.!?;:])", r"\1", text).strip(" ,;:")
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


# "tell him (that) …", "let her know …", "text Mom …", "say …", "reply …": the reply is what follows.
_TOLD = re.compile(
    r"^(?:please\s+|can you\s+|could you\s+)?(?:(?:tell|text|message|remind|write)\s+(?P<to>him|her|them|the\s+\w+|\w+)"
    r"|let\s+(?P<let>him|her|them|the\s+\w+|\w+)\s+know"
    r"|(?:say(?!\s+(?:hi|hello|hey)\s+to\b)|reply|answer|respond)(?:\s+(?:with|to\s+(?:him|her|them|\w+)))?)"
    r"(?:\s+that)?[,:]?\s+(?P<rest>.+)$", re.IGNORECASE)
_TO_VERB = re.compile(r"^to\s+(?P<verb>\w+)", re.IGNORECASE)
_NOT_NAMES = frozenset("i me you it that this we us so yes no sure okay ok".split())
_PRONOUNS = {"him": ("he", "him", "his", "himself"), "her": ("she", "her", "her", "herself"),
             "them": ("they", "them", "their", "themselves")}
# After an object "her" ("pick her up", "see her at 5"), not a possessive one ("her keys").
_AFTER_OBJECT = frozenset("""up down in out off on at to from for back over around later tomorrow today tonight now
    soon again too a an the some that this if when and or but so with by about""".split())
_ADVERBS = frozenset("always also just still never really usually sometimes often already probably".split())
_PARTICIPLES = frozenset("been got gone done had seen made left sent taken found".split())


def direct_reply(dictation: str) -> str:
    """The reply a dictation about the reply means: "tell him I'm late" → "I'm late"; else the dictation.

    Only the instruction is dropped and the addressee's pronouns turned to "you" (with the verb agreeing);
    every other word is the wearer's own.
    """
    match = _TOLD.match(dictation.strip())
    if match is None:
        return dictation
    to = (match.group("to") or match.group("let") or "").lower()
    if to in _NOT_NAMES:
        return dictation
    rest = match.group("rest").strip()
    if told := _TO_VERB.match(rest):  # "tell him to call me" → "Call me."
        rest = told.group("verb") + rest[told.end():]
    if to in _PRONOUNS:
        series = [_PRONOUNS[to]]
    else:  # a name: turn whichever of he or she the rest uses, if only one of them
        used = [p for p in ("him", "her") if re.search(rf"\b(?:{'|'.join(_PRONOUNS[p])})\b", rest, re.IGNORECASE)]
        series = [_PRONOUNS[used[0]]] if len(used) == 1 else []
    for subject, object_, possessive, reflexive in series:
        rest = _turn_to_you(rest, subject, object_, possessive, reflexive)
    return rest[:1].upper() + rest[1:]


def _turn_to_you(text: str, subject: str, object_: str, possessive: str, reflexive: str) -> str:
    words = re.findall(r"[\w']+|[^\w\s]+|\s+", text)
    out: list[str] = []
    for i, word in enumerate(words):
        lower = word.lower()
        following = next((w for w in words[i + 1:] if not w.isspace()), "")
        contraction = lower.removeprefix(subject) if lower.startswith(subject + "'") else None
        if contraction is not None:
            if contraction == "'s":  # "she's coming" → "you're coming", "he's been" → "you've been"
                contraction = "'ve" if following.lower() in _PARTICIPLES else "'re"
            out.append("you" + contraction)
        elif lower == subject and lower != object_:
            out.append("you")
            verb_at = next((j for j in range(i + 1, len(words)) if not words[j].isspace()
                            and words[j].lower() not in _ADVERBS and not words[j].lower().endswith("ly")), None)
            if verb_at is not None and re.fullmatch(r"[A-Za-z']{3,}", words[verb_at]):
                words[verb_at] = plain_verb(words[verb_at])
        elif lower == reflexive:
            out.append("yourself")
        elif lower == possessive and (lower != object_ or (following.isalpha()
                                                             and following.lower() not in _AFTER_OBJECT)):
            out.append("your")
        elif lower == object_:
            out.append("you")
        else:
            out.append(word)
    return "".join(out)


def dictated_reply(dictation: str) -> str:
    """The reply a dictation means, as the wearer would type it: without filler, the instruction dropped."""
    return clean_dictation(direct_reply(clean_dictation(dictation)))


_DISFLUENCY = re.compile(r"\b(\w+)\s+\1\b|\b(?:i mean|no wait|scratch that|actually no|sorry)\b", re.IGNORECASE)


def needs_tidying(dictation: str) -> bool:
    """Filler, a stammered repeat or a self-correction: only then is the model asked to rewrite.

    Whisper already writes clean sentences with capitals and punctuation; a
    model call costs most of a second before the read-back, and every rewrite
    is a chance to change the wearer's meaning.
    """
    return bool(_FILLER.search(dictation) or _DISFLUENCY.search(dictation))


def _content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS}


def rewrite_problem(rewrite: str, dictation: str) -> str:
    """Empty if `rewrite` may replace `dictation`, else why not."""
    if not rewrite or DICTATION_TASK[:20] in rewrite or "Dictated:" in rewrite:
        return "empty or echoes the prompt"
    if len(rewrite.split()) > MAX_GROWTH * len(dictation.split()) + 3:
        return "longer than the dictation allows"
    source = Message("dictation", "dictation", "wearer", dictation, datetime.now(timezone.utc))
    grounding = check_grounding(rewrite, [source])
    if not grounding.ok:
        return "adds " + ", ".join(grounding.unsupported)
    wanted, written = _content_words(dictation), _content_words(rewrite)
    if wanted and len(wanted & written) < KEEP_SHARE * len(wanted):
        return "drops words the wearer said"
    # Names and numbers are not the only facts: "I'm coming." adds a promise.
    if added := sorted(written - wanted):
        return "adds words the wearer did not say: " + ", ".join(added)
    return ""


class ReplyComposer:
    """Compose replies with `engine` when given one, else from the cleaned dictation alone."""

    def __init__(self, engine: Engine | None = None, max_tokens: int = 60) -> None:
        self.engine = engine
        self.max_tokens = max_tokens

    def compose(self, dictation: str) -> ComposedReply:
        cleaned = dictated_reply(dictation)
        if self.engine is None or not cleaned or not needs_tidying(dictation):
            return ComposedReply(cleaned, "dictation")
        prompt = dictation_prompt(self.engine.prompt_format, cleaned)
        rewrite = " ".join(self.engine.complete(prompt, max_tokens=self.max_tokens, stop=("\n",)).text.split())
        problem = rewrite_problem(rewrite, cleaned)
        if problem:
            return ComposedReply(cleaned, "dictation", problem)
        return ComposedReply(rewrite, "model")
