"""Message text made fit to be read aloud, without changing what it says.

A speech engine reads "https://…" letter by letter and an emoji as nothing or
as a code point name. Links become "a link to <site>", attachments the words
for them ("<photo>" → "a photo"), an emoji that stands alone as a message is
said as its name ("thumbs up") and one decorating a sentence is dropped (or, where
it ended one, "after 🙈 I can't", becomes a full stop), and runs of punctuation
shrink to one mark. Letters and digits are never touched.
"""

from __future__ import annotations

import re

import emoji

_URL = re.compile(r"\b(?:https?://|www\.)(?:[^\s/]+)(?:/\S*)?", re.IGNORECASE)
_HOST = re.compile(r"^(?:https?://)?(?:www\.)?([^/\s:?#]+)", re.IGNORECASE)
_ATTACHMENT = re.compile(r"<(photo|image|video|audio|voice message|sticker|gif|file|location)(?:\s+([^<>]{1,80}))?>",
                         re.IGNORECASE)
# Every emoji is outside ASCII and Latin-1 letters: most text needs no emoji scan (which is slow).
_MAYBE_EMOJI = re.compile(r"[\u00a9\u00ae\u203c-\u3299\U0001f000-\U0010ffff]")
_REPEATED_MARK = re.compile(r"([!?.])\1+")
_SPACE_BEFORE_MARK = re.compile(r"\s+([,.;:!?])")
_EMOJI_MARK = "\x00"
# An emoji between a word and a capital ends the sentence it follows: "release is Thu 26 Nov 🚀 Noemi: notes".
_EMOJI_ENDING_SENTENCE = re.compile(rf"(?<=\w)\s*{_EMOJI_MARK}[{_EMOJI_MARK}\s]*(?=[A-Z])")


def _attachment(match: re.Match[str]) -> str:
    kind, name = match.group(1).lower(), match.group(2)
    article = "an" if kind[0] in "aeiou" else "a"
    return f"{article} {kind} {name.strip()}" if name else f"{article} {kind}"


def _link(match: re.Match[str]) -> str:
    host = _HOST.match(match.group(0))
    return f"a link to {host.group(1)}" if host else "a link"


def emoji_words(text: str) -> str:
    """The names of the emoji in `text`, for a message that is nothing but emoji."""
    names = [emoji.demojize(e["emoji"]).strip(":").replace("_", " ") for e in emoji.emoji_list(text)]
    return ", ".join(dict.fromkeys(names))


def for_speech(text: str) -> str:
    text = _URL.sub(_link, text)
    text = _ATTACHMENT.sub(_attachment, text)
    if _MAYBE_EMOJI.search(text):
        if emoji.emoji_count(text) and not emoji.replace_emoji(text, "").strip(" \t\n.,!?"):
            return emoji_words(text)
        text = emoji.replace_emoji(text, _EMOJI_MARK)
        text = _EMOJI_ENDING_SENTENCE.sub(". ", text).replace(_EMOJI_MARK, "")
    text = _REPEATED_MARK.sub(r"\1", text)
    text = _SPACE_BEFORE_MARK.sub(r"\1", " ".join(text.split()))
    return text.strip()
