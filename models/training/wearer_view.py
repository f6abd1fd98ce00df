"""Training threads seen by one participant: the summary said to its reader.

A SAMSum dialogue is a chat among named people with a third-person summary
("Amanda baked cookies and will bring Jerry some tomorrow."). Seen by Jerry,
the same chat is a thread sent to a wearer, and its summary is "Amanda baked
cookies and will bring you some tomorrow." The rewrite is done by rules on
spaCy's parse of the summary, the same parser the device's relation checks use:

* the wearer's name becomes "you" ("Jerry's" → "your", a possessive pronoun of
  theirs "your", a reflexive "yourself"), with the verb agreeing ("Jerry
  wants" → "you want", "is" → "are", "wasn't" → "weren't");
* a he/she pronoun is only rewritten when the wearer is the one person the
  summary names, so it can only be theirs; with anyone else named it could be
  either, and the example is dropped rather than guessed;
* the rewrite must keep every fact: the same numbers and the same other names,
  in the same order, or the example is dropped.

Hard negatives for the same summary are made by rule too (`negatives`): the
wrong person, a flipped negation, a value of the chat the summary did not use.
They train the adapter against the errors the relation checks catch, by
unlikelihood at the first token where they part from the reference.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from tidings.device.llm.prompts import PromptFormat, render_dialogue, summary_prompt
from tidings.device.summary.relations import parser
from tidings.models.training.data import Dialogue, Example

_SINGULAR = {"he", "she", "him", "her", "his", "hers", "himself", "herself"}
_NUMBER = re.compile(r"\d+(?:[:.,]\d+)?")


@dataclass(frozen=True)
class WearerView:
    dialogue: Dialogue
    wearer: str
    summary: str  # said to the wearer


def _first_names(dialogue: Dialogue) -> dict[str, str]:
    """Each sender's first name (as summaries use it) to the sender as written."""
    return {m.sender.split()[0]: m.sender for m in dialogue.messages if m.sender[:1].isalpha()}


def _facts(text: str, wearer: str) -> tuple[list[str], list[str]]:
    """The numbers and the capitalised words other than the wearer's name, in order."""
    words = re.findall(r"[A-Z][\w'’-]*", text)
    names = [w.split("'")[0].split("’")[0] for w in words]
    return _NUMBER.findall(text), [n for n in names if n != wearer and n not in ("You", "Your")]


def _verb_for_you(token) -> str:
    """The form of `token` (the verb after a third-person subject) after "you"."""
    lower = token.lower_
    if lower in ("is", "'s", "’s") and token.lemma_ == "be":
        return "are" if lower == "is" else "'re"
    if lower in ("'s", "’s"):
        return "'ve"
    if lower == "was":
        return "were"
    if lower == "has":
        return "have"
    if lower == "does":
        return "do"
    if token.tag_ == "VBZ":
        return token.lemma_ if token.text.islower() else token.lemma_.capitalize()
    return token.text


def _finite_verbs(verb) -> list:
    """The verbs that agree with `verb`'s subject: its own (or its auxiliary), and those of verbs
    coordinated with it that have no subject of their own ("is moving ... and asks")."""
    found = []
    for head in [verb, *(c for c in verb.conjuncts if c.i > verb.i and not any(
            d.dep_.startswith("nsubj") for d in c.children))]:
        auxiliaries = [c for c in head.children if c.dep_ in ("aux", "auxpass") and c.i < head.i]
        for candidate in auxiliaries[:1] or [head]:
            if candidate.tag_ == "VBZ" or candidate.lower_ == "was":
                found.append(candidate)
    return found


def say_to_wearer(summary: str, wearer: str) -> str | None:
    """`summary` said to `wearer` ("you"), or None when the rules cannot do it safely."""
    doc = parser()(summary)
    named = {t.text for t in doc if t.pos_ == "PROPN" and t.text[:1].isupper()}
    if wearer not in {t.text for t in doc}:
        return None
    pronouns = [t for t in doc if t.lower_ in _SINGULAR]
    if pronouns and named - {wearer}:
        return None  # "him" could be the wearer or the other person named
    mentions = [t for t in doc if t.text == wearer or (pronouns and t.lower_ in _SINGULAR)]
    agreeing = {verb.i for t in mentions if t.dep_ in ("nsubj", "nsubjpass") for verb in _finite_verbs(t.head)}
    out: list[str] = []
    skip: set[int] = set()
    for token in doc:
        if token.i in skip:
            continue
        if token.i in agreeing:
            out.append(_verb_for_you(token) + token.whitespace_)
            continue
        if token not in mentions:
            out.append(token.text_with_ws)
            continue
        end = token  # the last token this mention takes up
        if token.text == wearer and token.i + 1 < len(doc) and doc[token.i + 1].dep_ == "flat":
            end = doc[token.i + 1]  # a surname
        after = doc[end.i + 1] if end.i + 1 < len(doc) else None
        following = doc[after.i + 1] if after is not None and after.i + 1 < len(doc) else None
        if after is not None and after.tag_ == "POS" and following is not None and following.tag_ in ("VBG", "VBN"):
            word, end = ("you're" if following.tag_ == "VBG" else "you've"), after  # "Nancy's working"
        elif after is not None and after.tag_ == "POS":  # "Jerry's bike"
            word, end = "your", after
        elif token.tag_ == "PRP$":
            word = "your"
        elif token.lower_ == "hers" or (token.lower_ == "his" and token.tag_ == "PRP"):
            word = "yours"
        elif token.lower_ in ("himself", "herself"):
            word = "yourself"
        else:
            word = "you"
        skip.update(range(token.i, end.i + 1))
        start = not "".join(out).strip() or "".join(out).rstrip().endswith((".", "!", "?"))
        out.append((word[0].upper() + word[1:] if start else word) + end.whitespace_)
    said = "".join(out)
    if re.search(rf"\b{re.escape(wearer)}\b", said) or _facts(said, wearer) != _facts(summary, wearer):
        return None
    return said


def wearer_views(dialogues: Sequence[Dialogue], seed: int) -> list[WearerView]:
    """For each chat whose summary names one of its senders, that sender's view (one per chat, seeded)."""
    rng = random.Random(seed)
    views = []
    for dialogue in dialogues:
        senders = _first_names(dialogue)
        named = [name for name in senders if re.search(rf"\b{re.escape(name)}\b", dialogue.summary)]
        rng.shuffle(named)
        for name in named:
            said = say_to_wearer(dialogue.summary, name)
            if said is not None:
                views.append(WearerView(dialogue, senders[name], said))
                break
    return views


_FLIPS = [("won't", "will"), ("can't", "can"), ("isn't", "is"), ("aren't", "are"), ("wasn't", "was"),
          ("doesn't ", "does "), ("don't ", "do "), ("didn't ", "did "), ("not ", "")]
_TO_NEGATIVE = {"will": "won't", "can": "can't", "is": "isn't", "are": "aren't", "was": "wasn't"}
_OBJECTS = ("dobj", "pobj", "dative", "iobj", "obj")


def negatives(summary: str, dialogue: Dialogue, wearer: str = "") -> list[str]:
    """Wrong versions of `summary`, each by one rule: the wrong person, a flipped negation, an unused value.

    Only where they part from `summary` matters (unlikelihood is taken at the first differing token), so
    each negative makes one change there: a subject swapped with an object ("Amanda will bring you" →
    "You will bring Amanda"), else a subject replaced by a sender the summary does not name; the first
    negation flipped; the first number replaced by one of the chat's the summary did not use.
    """
    doc = parser()(summary)
    senders = list(_first_names(dialogue))
    person = {*senders, "you", "You"} - ({wearer.split()[0]} if wearer else set())
    people = [t for t in doc if t.text in person]
    wrong: list[str] = []
    subject = next((t for t in people if t.dep_ in ("nsubj", "nsubjpass")), None)
    if subject is not None:
        partner = next((t for t in people if t.dep_ in _OBJECTS and t.lower_ != subject.lower_
                        and subject not in t.conjuncts), None)
        stranger = next((n for n in senders if n not in summary and n != (wearer.split()[0] if wearer else "")), None)
        if partner is not None:
            first, second = sorted((subject, partner), key=lambda t: t.i)
            text = (summary[:first.idx] + _as_word(second.text, first.i == 0) + summary[first.idx + len(first.text):
                    second.idx] + _as_word(first.text, False) + summary[second.idx + len(second.text):])
            wrong.append(text)
        elif stranger is not None:
            wrong.append(summary[:subject.idx] + stranger + summary[subject.idx + len(subject.text):])
    for negative, positive in _FLIPS:
        if negative in summary:
            wrong.append(summary.replace(negative, positive, 1))
            break
    else:
        auxiliary = next((t for t in doc if t.lower_ in _TO_NEGATIVE and t.dep_ in ("aux", "ROOT", "auxpass")), None)
        if auxiliary is not None:
            wrong.append(summary[:auxiliary.idx] + _TO_NEGATIVE[auxiliary.lower_]
                         + summary[auxiliary.idx + len(auxiliary.text):])
    said = _NUMBER.findall(summary)
    unused = [n for m in dialogue.messages for n in _NUMBER.findall(m.text) if n not in said]
    if said and unused:
        wrong.append(summary.replace(said[0], unused[-1], 1))
    return [w for w in dict.fromkeys(wrong) if w != summary]


def _as_word(name: str, sentence_start: bool) -> str:
    if name.lower() == "you":
        return "You" if sentence_start else "you"
    return name


def wearer_examples(fmt: PromptFormat, dialogues: Sequence[Dialogue], seed: int) -> list[Example]:
    """A summary example said to a participant for each chat that has one, with its hard negatives."""
    examples = []
    for view in wearer_views(dialogues, seed):
        prompt = summary_prompt(fmt, render_dialogue(view.dialogue.messages), wearer=view.wearer)
        examples.append(Example(f"{view.dialogue.id}>{view.wearer}", "wearer-summary", prompt, view.summary,
                                tuple(negatives(view.summary, view.dialogue, view.wearer))))
    return examples


def with_negatives(examples: Sequence[Example], dialogues: Sequence[Dialogue]) -> list[Example]:
    """Third-person summary examples given their hard negatives (the others as they are)."""
    by_id = {d.id: d for d in dialogues}
    return [Example(e.id, e.task, e.prompt, e.answer, tuple(negatives(e.answer, by_id[e.id])))
            if e.task == "summary" and e.id in by_id else e for e in examples]
