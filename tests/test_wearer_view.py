"""Wearer-perspective training data: summaries said to a participant by rules that keep every fact,
hard negatives by rule, and the unlikelihood term they train through."""

from __future__ import annotations

import re

import pytest

from tidings.device.llm.prompts import FORMATS
from tidings.models.training.data import DATA_DIR, Dialogue, Example, dialogue_messages, load_samsum
from tidings.models.training.wearer_view import negatives, say_to_wearer, wearer_examples, wearer_views

needs_data = pytest.mark.skipif(not (DATA_DIR / "samsum_validation.json").exists(), reason=f"no data in {DATA_DIR}")


@pytest.mark.parametrize("summary, wearer, said", [
    ("Amanda baked cookies and will bring Jerry some tomorrow.", "Jerry",
     "Amanda baked cookies and will bring you some tomorrow."),
    ("Marla found a pair of boxers under her bed.", "Marla", "You found a pair of boxers under your bed."),
    ("Tom doesn't want to go. Tom wants pizza.", "Tom", "You don't want to go. You want pizza."),
    ("James is applying for a job and is looking for tips.", "James",
     "You are applying for a job and are looking for tips."),
    ("Tommy is moving and asks Jimmy for help. Jimmy has got 2 hours on Saturday.", "Tommy",
     "You are moving and ask Jimmy for help. Jimmy has got 2 hours on Saturday."),
    ("Tom's new place is in Fiesole.", "Tom", "Your new place is in Fiesole."),
    ("Nancy's working in Texas.", "Nancy", "You're working in Texas."),
    ("Frank made tuna salad himself.", "Frank", "You made tuna salad yourself."),
])
def test_a_summary_is_said_to_the_wearer(summary, wearer, said):
    assert say_to_wearer(summary, wearer) == said


def test_a_pronoun_that_could_be_someone_else_drops_the_example_instead_of_guessing():
    assert say_to_wearer("Robert wants Fred to send him the address.", "Fred") is None
    assert say_to_wearer("Amanda baked cookies.", "Jerry") is None  # the wearer is not in it


@needs_data
def test_every_rewritten_samsum_summary_keeps_its_numbers_and_other_names():
    dialogues = load_samsum(DATA_DIR / "samsum_validation.json")
    views = wearer_views(dialogues, seed=0)
    assert len(views) > 300  # of 818: the rules keep what they can say safely
    for view in views:
        first = view.wearer.split()[0]
        assert not re.search(rf"\b{re.escape(first)}\b", view.summary), view
        assert re.findall(r"\d+", view.summary) == re.findall(r"\d+", view.dialogue.summary)
        others = [w for w in re.findall(r"\b[A-Z]\w+", view.dialogue.summary) if w != first]
        kept = [w for w in re.findall(r"\b[A-Z]\w+", view.summary) if w not in ("You", "Your")]
        assert [w for w in kept if w in others] == [w for w in others if w in kept], view
        assert re.search(r"\byou(r|rself|'re|'ve)?\b", view.summary, re.IGNORECASE)


def _chat(summary: str, text: str) -> Dialogue:
    return Dialogue("d", "samsum", dialogue_messages("d", text), summary)


def test_negatives_swap_the_roles_flip_the_negation_and_use_the_value_the_summary_did_not():
    dialogue = _chat("Amanda will bring you cookies at 8.", "Amanda: cookies at 7?\nAmanda: no, 8\nJerry: great")
    wrong = negatives("Amanda will bring you cookies at 8.", dialogue, wearer="Jerry")
    assert "You will bring Amanda cookies at 8." in wrong
    assert "Amanda won't bring you cookies at 8." in wrong
    assert "Amanda will bring you cookies at 7." in wrong
    # People doing the same thing together are not a wrong person: no swap among conjuncts.
    together = _chat("Daniel and you will go jogging at 7.", "Daniel: jogging at 7?\nSara: yes")
    assert not any(w.startswith(("you and Daniel", "You and Daniel")) for w in negatives(
        "Daniel and you will go jogging at 7.", together, wearer="Sara"))


def test_wearer_examples_use_the_wearer_prompt_and_carry_their_negatives():
    dialogue = _chat("Jerry will get cookies tomorrow.", "Amanda: I baked cookies\nJerry: yum\n"
                     "Amanda: I'll bring you some tomorrow")
    [example] = wearer_examples(FORMATS["gemma"], [dialogue], seed=0)
    assert example.task == "wearer-summary" and example.answer == "You will get cookies tomorrow."
    assert 'for Jerry in one or two sentences, calling Jerry "you"' in example.prompt.text
    assert example.negatives == ("Amanda will get cookies tomorrow.", "You won't get cookies tomorrow.")


@pytest.mark.model
def test_a_negative_is_trained_against_at_its_first_wrong_token(embedded_model):
    torch = pytest.importorskip("torch", reason="training needs the `train` extra")
    from tidings.device.config import Config
    from tidings.models.training.hf_base import load_hf_base
    from tidings.models.training.train import Tokenizer, TrainConfig, answer_loss, attach_lora, tokenize_examples

    from tidings.device.llm.prompts import summary_prompt

    tokenizer = Tokenizer(embedded_model.path)
    prompt = summary_prompt(FORMATS["gemma"], "Amanda: I'll bring you cookies\nJerry: yum", wearer="Jerry")
    example = Example("e", "wearer-summary", prompt, "Amanda will bring you cookies.",
                      ("You will bring Amanda cookies.", "Amanda won't bring you cookies."))
    [tokenized], _ = tokenize_examples(tokenizer, [example], FORMATS["gemma"].end_of_turn, 256)
    assert len(tokenized.wrong_tokens) == 2
    for position, token in tokenized.wrong_tokens:
        assert position >= tokenized.answer_start and tokenized.ids[position] != token
    model = attach_lora(load_hf_base(embedded_model, Config().model.cache_dir),
                        TrainConfig(rank=2, alpha=4, target_modules=("q_proj", "v_proj")))
    with torch.no_grad():
        plain = answer_loss(model, [tokenized], pad_id=1).item()
        assert answer_loss(model, [tokenized], pad_id=1, unlikelihood=0.0).item() == plain
        assert answer_loss(model, [tokenized], pad_id=1, unlikelihood=1.0).item() > plain
