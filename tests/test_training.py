"""The adapter recipe: shared prompts, resumable training, and PEFT -> GGUF -> llama.cpp agreement."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training needs the `train` extra")

from tidings.device.config import Config, EngineConfig  # noqa: E402
from tidings.device.llm.engine import Engine  # noqa: E402
from tidings.device.llm.prompts import FORMATS, render_dialogue, summary_prompt  # noqa: E402
from tidings.models.training.data import (  # noqa: E402
    DATA_DIR, build_examples, dialogue_messages, reply_example, split_holdout, summary_example, training_dialogues,
)
from tidings.models.training.export import export_peft_model  # noqa: E402
from tidings.models.training.hf_base import load_hf_base  # noqa: E402
from tidings.models.training.train import (  # noqa: E402
    Tokenizer, TrainConfig, accumulate_answer_loss, answer_loss, attach_lora, batch_plan, micro_batches,
    tokenize_examples, train_lora,
)

pytestmark = pytest.mark.model
GEMMA = FORMATS["gemma"]
needs_data = pytest.mark.skipif(not (DATA_DIR / "samsum_validation.json").exists(), reason=f"no data in {DATA_DIR}")


@pytest.fixture(scope="module")
def tokenizer(embedded_model):
    return Tokenizer(embedded_model.path)


def test_training_and_inference_build_the_same_prompt_and_the_same_tokens(engine: Engine, tokenizer):
    messages = dialogue_messages("d1", "Ann: Lunch at 12:30?\r\nBen: Sure, the usual place \U0001F35C\nAnn: Great")
    from tidings.models.training.data import Dialogue

    example = summary_example(GEMMA, Dialogue("d1", "samsum", messages, "Ann and Ben meet for lunch at 12:30."))
    inference = summary_prompt(engine.prompt_format, render_dialogue(messages))
    assert example.prompt == inference
    tokenized = tokenizer.example(example, GEMMA.end_of_turn)
    assert tokenized.ids[: tokenized.answer_start] == engine.tokenize(inference)
    end_of_turn = engine.llm.tokenize(b"<end_of_turn>", add_bos=False, special=True)
    assert tokenized.ids[-1:] == end_of_turn


def test_reply_examples_predict_the_next_turn_from_the_turns_before_it():
    from tidings.models.training.data import Dialogue

    messages = dialogue_messages("d2", "Ann: Are you coming tonight?\nBen: Yes, I'll be there at 8.\nAnn: Great")
    example = reply_example(GEMMA, Dialogue("d2", "samsum", messages, "s"), random.Random(0))
    assert example.answer == "Yes, I'll be there at 8."
    assert "Ann: Are you coming tonight?" in example.prompt.text and "there at 8" not in example.prompt.text
    assert "as Ben" in example.prompt.text


@needs_data
def test_the_test_split_is_never_a_training_source_and_the_holdout_is_fixed():
    dialogues = training_dialogues()
    assert {d.corpus for d in dialogues} == {"samsum", "dialogsum"}
    assert not any(d.id.isdigit() for d in dialogues if d.corpus == "samsum")  # test ids are numeric
    train_a, held_a = split_holdout(dialogues, 0.08, seed=0)
    train_b, held_b = split_holdout(dialogues, 0.08, seed=0)
    assert [d.id for d in held_a] == [d.id for d in held_b]
    assert not {d.id for d in train_a} & {d.id for d in held_a}


def _tiny_examples(tokenizer, n: int = 6, summary_words: int = 0):
    from tidings.models.training.data import Dialogue

    dialogues = [Dialogue(f"d{i}", "samsum", dialogue_messages(f"d{i}", f"Ann: Meet at {i + 1}pm?\nBen: OK, see you."),
                          f"Ann and Ben meet at {i + 1}pm" + " at the cafe" * (summary_words * i) + ".")
                 for i in range(n)]
    examples, _ = tokenize_examples(tokenizer, build_examples(GEMMA, dialogues, reply_share=0.0, seed=0),
                                    GEMMA.end_of_turn, 256)
    return examples


def test_an_interrupted_run_resumes_to_exactly_the_same_adapter(embedded_model, tokenizer, tmp_path: Path):
    # batch_tokens=1: one example per step, so six steps, interrupted after two.
    config = TrainConfig(rank=2, alpha=4, target_modules=("q_proj", "v_proj"), batch_tokens=1, epochs=1,
                         checkpoint_every=1, bf16=False, warmup_steps=1)
    examples = _tiny_examples(tokenizer)
    assert len(batch_plan(examples, config.batch_tokens, config.epochs, config.seed)) == len(examples) == 6
    cache = Config().model.cache_dir
    calls = iter(range(100))
    _, stopped = train_lora(load_hf_base(embedded_model, cache), examples, [], config, tmp_path / "resumed",
                            pad_id=1, should_stop=lambda: next(calls) >= 2)
    assert stopped.step == 2
    resumed, state = train_lora(load_hf_base(embedded_model, cache), examples, [], config, tmp_path / "resumed", pad_id=1)
    straight, straight_state = train_lora(load_hf_base(embedded_model, cache), examples, [], config,
                                          tmp_path / "straight", pad_id=1)
    assert state.step == straight_state.step > 2
    assert [h["loss"] for h in state.history] == [h["loss"] for h in straight_state.history]
    for (name, a), (_, b) in zip(resumed.named_parameters(), straight.named_parameters()):
        if a.requires_grad:
            assert torch.equal(a, b), name


def test_a_batch_run_in_pieces_gives_the_loss_and_gradient_of_the_whole_batch(embedded_model, tokenizer):
    examples = _tiny_examples(tokenizer, summary_words=1)
    widest = max(len(e.ids) for e in examples)
    pieces = micro_batches(examples, 2 * widest)
    assert len(pieces) == 3 and [e for piece in pieces for e in piece] == examples
    assert all(len(piece) * max(len(e.ids) for e in piece) <= 2 * widest for piece in pieces)
    assert len({len(e.ids) - e.answer_start for e in examples}) > 1  # pieces must be weighted by answer tokens
    model = attach_lora(load_hf_base(embedded_model, Config().model.cache_dir),
                        TrainConfig(rank=2, alpha=4, target_modules=("q_proj", "v_proj")))
    torch.manual_seed(0)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:  # off zero, so A gets a gradient too
            torch.nn.init.normal_(parameter, std=0.02)
    whole = answer_loss(model, examples, pad_id=1)
    whole.backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    in_pieces = accumulate_answer_loss(model, examples, pad_id=1, micro_batch_tokens=2 * widest)
    assert in_pieces == pytest.approx(whole.item(), rel=1e-5)
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert expected[name].abs().sum() > 0, name
            torch.testing.assert_close(parameter.grad, expected[name], rtol=1e-3, atol=1e-6)


def test_peft_to_gguf_conversion_agrees_with_pytorch_in_llama_cpp(embedded_model, tokenizer, tmp_path: Path):
    """The adapter's effect on the next-token logits is the same in both runtimes.

    The two runtimes differ even without an adapter (llama.cpp quantizes
    activations for its Q4_K matmuls; measured: logits up to about 0.8 apart),
    so the check is on the adapter's effect, with that noise as the bound.
    """
    torch.manual_seed(0)
    model = attach_lora(load_hf_base(embedded_model, Config().model.cache_dir),
                        TrainConfig(rank=4, alpha=8, target_modules=("q_proj", "v_proj", "down_proj")))
    with torch.no_grad():  # PEFT starts B at zero, a no-op adapter: give it a real effect
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.04)
    adapter = export_peft_model(model, tmp_path / "adapter.gguf")
    prompts = [e.ids[: e.answer_start] for e in _tiny_examples(tokenizer, 3)]
    with Engine(embedded_model, EngineConfig(n_ctx=512, n_threads=2, n_batch=512)) as engine:
        engine.load_adapter(adapter, "a")
        for ids in prompts:
            engine.set_adapters({})
            llama_base = engine.next_token_logits(ids)
            engine.set_adapters({"a": 1.0})
            llama_lora = engine.next_token_logits(ids)
            with torch.no_grad(), model.disable_adapter():
                torch_base = model(input_ids=torch.tensor([ids])).logits[0, -1].double().numpy()
            with torch.no_grad():
                torch_lora = model(input_ids=torch.tensor([ids])).logits[0, -1].double().numpy()
            delta_llama, delta_torch = llama_lora - llama_base, torch_lora - torch_base
            cosine = delta_llama @ delta_torch / (np.linalg.norm(delta_llama) * np.linalg.norm(delta_torch))
            relative_error = np.linalg.norm(delta_llama - delta_torch) / np.linalg.norm(delta_torch)
            runtime_noise = np.abs(llama_base - torch_base).max()
            print(f"cosine {cosine:.3f}, relative error {relative_error:.3f}, "
                  f"max |lora difference| {np.abs(llama_lora - torch_lora).max():.3f}, runtime noise {runtime_noise:.3f}")
            assert np.abs(delta_torch).max() > 3 * runtime_noise  # the adapter moves logits well beyond the noise
            assert cosine > 0.9 and relative_error < 0.4
            assert np.abs(llama_lora - torch_lora).max() < 2 * runtime_noise
            # Greedy picks agree up to the noise: llama.cpp's choice is as good as PyTorch's to within it.
            assert torch_lora.max() - torch_lora[llama_lora.argmax()] < runtime_noise
