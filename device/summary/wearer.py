"""Who the wearer is: the person every summary is spoken to.

A thread is seen from the wearer's side. Their own messages are theirs (never
announced back, never owed a reply), a message that names them or says "you"
speaks to them, and a summary addresses them as "you". With no name configured
there is no such side, and summaries stay in the third person.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tidings.device.config import WearerConfig


def name_key(name: str) -> str:
    """A name as compared: case, spacing and a handle's "@" do not matter."""
    return " ".join(name.casefold().lstrip("@").split())


@dataclass(frozen=True)
class Wearer:
    name: str = ""
    aliases: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: WearerConfig) -> Wearer:
        return cls(config.name.strip(), tuple(a.strip() for a in config.aliases if a.strip()))

    def __bool__(self) -> bool:
        return bool(self.name)

    @property
    def names(self) -> tuple[str, ...]:
        """Every name the wearer goes by, the configured name first."""
        return tuple(dict.fromkeys(n for n in (self.name, *self.aliases) if n))

    def is_sender(self, sender: str) -> bool:
        """Did the wearer send a message from `sender`? (Matrix ids and case do not matter.)"""
        return bool(self) and name_key(sender) in {name_key(n) for n in self.names}

    def pattern(self) -> re.Pattern[str] | None:
        """Matches the wearer's names (and their first names) as whole words in text."""
        if not self:
            return None
        words = {w for n in self.names for w in (n, n.split()[0]) if len(w) > 1}
        alternation = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
        return re.compile(rf"(?<!\w)@?(?:{alternation})(?!\w)", re.IGNORECASE)

    def is_named_in(self, text: str) -> bool:
        pattern = self.pattern()
        return pattern is not None and pattern.search(text) is not None

    def is_named_as_recipient(self, text: str) -> bool:
        """Named after "to", "for", "from" or "with": "send it to alex" is said to the others, about the wearer."""
        pattern = self.pattern()
        return pattern is not None and re.search(rf"\b(?:to|for|from|with)\s+{pattern.pattern}", text,
                                                 re.IGNORECASE) is not None


_IRREGULAR = {"is": "are", "was": "were", "has": "have", "does": "do", "isn't": "aren't", "wasn't": "weren't",
              "hasn't": "haven't", "doesn't": "don't"}


def plain_verb(word: str) -> str:
    """The form a verb takes after "you": "wants" → "want", "carries" → "carry", "goes" → "go"."""
    lower = word.casefold()
    if lower in _IRREGULAR:
        return _IRREGULAR[lower]
    if lower.endswith("ies") and len(lower) > 4:
        return word[:-3] + "y"
    if re.search(r"(?:sh|ch|x|ss|o)es$", lower):
        return word[:-2]
    if lower.endswith("s") and not lower.endswith("ss"):
        return word[:-1]
    return word


def address_wearer(text: str, wearer: Wearer) -> str:
    """A third-person summary said to the wearer: "Alex's bike" → "your bike", "Alex wants" → "you want"."""
    pattern = wearer.pattern()
    if pattern is None:
        return text
    names = pattern.pattern.removeprefix("(?<!\\w)@?")

    def subject(match: re.Match[str]) -> str:
        start = match.start() == 0 or text[:match.start()].rstrip().endswith((".", "!", "?", ";", ":"))
        you = "You" if start else "you"
        verb = match.group("verb")
        plain = plain_verb(verb) if verb.islower() and (verb.endswith("s") or verb in _IRREGULAR) else verb
        return f"{you} {plain}"

    text = re.sub(rf"{names}['’]s\b", "your", text, flags=re.IGNORECASE)
    text = re.sub(rf"{names}\s+(?P<verb>[a-z]+(?:n't)?)\b", subject, text, flags=re.IGNORECASE)
    text = re.sub(rf"{names}", "you", text, flags=re.IGNORECASE)
    return re.sub(r"(^|[.!?]\s+)your\b", lambda m: m.group(1) + "Your", text)
