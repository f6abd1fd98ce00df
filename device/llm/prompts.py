"""Prompts, built by one function for inference and for adapter training.

A prompt is a sequence of parts, each either *control* text (the model's turn
markers, tokenized with special tokens enabled) or *content* (messages, never
allowed to produce special tokens). Keeping the two apart is what stops a
message containing "<end_of_turn>" from forging a turn of its own.

The dialogue comes first and the task last, so a thread's summary, its retry
and its reply suggestions share one prompt prefix and llama.cpp evaluates the
dialogue once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tidings.device.messages import Message

SUMMARY_TASK = "Summarize this chat in one or two sentences: who wants what, and by when."
# Said to the chat's reader: their messages are under their name, and the summary calls them "you".
WEARER_SUMMARY_TASK = ("Summarize this chat for {wearer} in one or two sentences, calling {wearer} \"you\": "
                       "who wants what, and by when.")
EARLIER = " Earlier in the chat: {earlier}"
ROLLING_TASK = SUMMARY_TASK + EARLIER
REPLY_TASK = "Write the next message in this chat, as {wearer}. One short sentence."
DICTATION_TASK = "Write this dictated reply as a clean chat message. Keep its meaning; add nothing."


@dataclass(frozen=True)
class PromptFormat:
    name: str
    user_open: str
    user_close: str  # closes the user turn and opens the model's
    end_of_turn: str


FORMATS = {
    "gemma": PromptFormat(
        "gemma", "<start_of_turn>user\n", "<end_of_turn>\n<start_of_turn>model\n", "<end_of_turn>"
    ),
    "chatml": PromptFormat(
        "chatml", "<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n", "<|im_end|>"
    ),
}


@dataclass(frozen=True)
class Prompt:
    parts: tuple[tuple[str, bool], ...]  # (text, is_control)
    stop: tuple[str, ...]

    @property
    def text(self) -> str:
        return "".join(text for text, _ in self.parts)


def render_dialogue(messages: Sequence[Message]) -> str:
    """One `Sender: text` line per message, the shape of the training data."""
    return "\n".join(f"{m.sender}: {' '.join(m.text.split())}" for m in messages)


def user_turn(fmt: PromptFormat, content: str) -> Prompt:
    return Prompt(((fmt.user_open, True), (content, False), (fmt.user_close, True)), (fmt.end_of_turn,))


def summary_prompt(fmt: PromptFormat, dialogue: str, earlier: str = "", wearer: str = "") -> Prompt:
    """The summary task; with `wearer`, a summary said to them (the third person without)."""
    task = WEARER_SUMMARY_TASK.format(wearer=wearer) if wearer else SUMMARY_TASK
    if earlier:
        task += EARLIER.format(earlier=earlier)
    return user_turn(fmt, f"{dialogue}\n\n{task}")


def reply_prompt(fmt: PromptFormat, dialogue: str, wearer: str) -> Prompt:
    return user_turn(fmt, f"{dialogue}\n\n{REPLY_TASK.format(wearer=wearer or 'me')}")


def dictation_prompt(fmt: PromptFormat, dictation: str) -> Prompt:
    """Only the dictation, not the thread: the clean reply may say nothing the wearer did not."""
    return user_turn(fmt, f"Dictated: {dictation}\n\n{DICTATION_TASK}")


def training_text(fmt: PromptFormat, prompt: Prompt, answer: str) -> tuple[str, str]:
    """(prompt text, answer text ending the turn): the loss goes on the second."""
    return prompt.text, f"{answer}{fmt.end_of_turn}"
