"""From the wearer's dictation to the reply they hear read back.

Speech recognition gives the wearer's words with their ums and ahs. The reply
must read as they would type it, keep their meaning and add nothing. When
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
        cleaned = clean_dictation(dictation)
        if self.engine is None or not cleaned or not needs_tidying(dictation):
            return ComposedReply(cleaned, "dictation")
        prompt = dictation_prompt(self.engine.prompt_format, cleaned)
        rewrite = " ".join(self.engine.complete(prompt, max_tokens=self.max_tokens, stop=("\n",)).text.split())
        problem = rewrite_problem(rewrite, cleaned)
        if problem:
            return ComposedReply(cleaned, "dictation", problem)
        return ComposedReply(rewrite, "model")
