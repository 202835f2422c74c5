"""Issue 19, item 6: the gaps a new user met next to Keras, nanoGPT and the HF Trainer."""

import inspect
import logging
import sys

import pytest
import torch
from torch import nn

import seqlab
from seqlab.data import Vocab
from seqlab.models import LanguageModel, LanguageModelConfig
from seqlab.tasks.shakespeare import ShakespeareConfig, build_model, sample_text
from seqlab.training import TrainConfig, Trainer
from seqlab.training.logs import TensorBoard


def tiny_lm(seed=0):
    torch.manual_seed(seed)
    return LanguageModel(LanguageModelConfig(7, embed_size=4, hidden_size=6)).eval()


def hand_decode(lm, prompt, steps, choose):
    """Oracle: re-run the whole sequence every step (no carried state) and pick the next
    token from the last position's logits."""
    seq = prompt.clone()
    out = []
    for _ in range(steps):
        with torch.no_grad():
            logits, _ = lm(seq)
        nxt = choose(logits[:, -1])
        out.append(nxt)
        seq = torch.cat([seq, nxt[:, None]], 1)
    return torch.stack(out, 1)


def test_generate_with_temperature_samples_without_naming_the_strategy():
    lm = tiny_lm()
    prompt = torch.tensor([[1, 2, 3], [4, 5, 6]])
    got = lm.generate(prompt, 9, temperature=0.8, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    want = hand_decode(
        lm, prompt, 9, lambda z: torch.multinomial(torch.softmax(z / 0.8, -1), 1, generator=g)[:, 0]
    )
    torch.testing.assert_close(got.tokens, want, rtol=0, atol=0)


def test_temperature_zero_and_no_options_are_greedy():
    lm = tiny_lm(1)
    prompt = torch.tensor([[3, 1], [2, 2]])
    want = hand_decode(lm, prompt, 8, lambda z: z.argmax(-1))
    for kwargs in ({}, {"temperature": 0}, {"temperature": 0.0, "top_k": 3}):
        torch.testing.assert_close(lm.generate(prompt, 8, **kwargs).tokens, want, rtol=0, atol=0)
    torch.testing.assert_close(
        lm.generate(prompt, 8, strategy="sample", temperature=0).tokens, want, rtol=0, atol=0
    )
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        lm.generate(prompt, 3, temperature=-1.0)


def test_transformer_lm_generate_takes_temperature_too():
    torch.manual_seed(0)
    tlm = seqlab.TransformerLM(7, d_model=8, nhead=2, num_layers=1, max_len=32).eval()
    prompt = torch.tensor([[1, 2, 3]])
    out = tlm.generate(prompt, 5, temperature=0.7, generator=torch.Generator().manual_seed(0))
    assert out.tokens.shape == (1, 5)
    greedy = hand_decode(lambda s: (tlm(s), None), prompt, 5, lambda z: z.argmax(-1))
    torch.testing.assert_close(tlm.generate(prompt, 5, temperature=0).tokens, greedy)


def test_task_sampler_temperature_zero_is_argmax():
    vocab = Vocab.build(["abcdefg hij\n"])
    torch.manual_seed(0)
    model = build_model(ShakespeareConfig(embed=4, hidden=6), len(vocab)).eval()
    text = sample_text(model, vocab, "ab", 12, temperature=0.0)
    ids = torch.tensor([vocab.encode("ab")])
    want = hand_decode(model, ids, 12, lambda z: z.argmax(-1))[0].tolist()
    assert text == "".join(vocab.decode(want, strip_specials=False))
    with pytest.raises(ValueError, match="temperature: expected >= 0"):
        sample_text(model, vocab, "ab", 3, temperature=-0.5)


class Windowed(nn.Module):
    """A stateless loss over a (B, T) float batch, so every TBPTT window is one step."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return (x * self.w).pow(2).mean()


def test_max_steps_wins_over_the_one_epoch_default():
    # 2 batches of 100 steps cut into TBPTT windows of 50: 4 optimiser steps per epoch.
    data = [{"x": torch.randn(2, 100)} for _ in range(2)]

    def loss(model, batch, state=None):
        return model(batch["x"]), state

    cfg = TrainConfig(max_steps=10, tbptt_k1=50, optimizer="sgd", lr=0.01)
    res = Trainer(Windowed(), data, cfg, loss_fn=loss).fit()
    assert (res.steps, res.stopped) == (10, "max_steps")
    # without a step or time budget the default is still one pass
    res = Trainer(Windowed(), data, TrainConfig(tbptt_k1=50, lr=0.01), loss_fn=loss).fit()
    assert (res.steps, res.stopped) == (4, "epochs")
    # an explicit epoch count still stops first
    cfg = TrainConfig(epochs=1, max_steps=10, tbptt_k1=50, lr=0.01)
    assert Trainer(Windowed(), data, cfg, loss_fn=loss).fit().steps == 4


def test_missing_tensorboard_is_announced(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with caplog.at_level(logging.WARNING, logger="seqlab.training"):
        tb = TensorBoard(tmp_path / "tb")
    assert not tb.available
    (record,) = [r for r in caplog.records if "TensorBoard is not installed" in r.getMessage()]
    assert record.levelno == logging.WARNING and "pip install tensorboard" in record.getMessage()


def test_every_model_class_has_its_own_docstring():
    import seqlab.models
    import seqlab.transformer

    checked = []
    for module in (seqlab.models, seqlab.transformer):
        for name in dir(module):
            obj = getattr(module, name)
            if isinstance(obj, type) and issubclass(obj, nn.Module):
                assert "__doc__" in vars(obj) and obj.__doc__, name
                assert inspect.getdoc(obj) != inspect.getdoc(nn.Module), name
                checked.append(name)
    assert "SequenceClassifier" in checked and "LanguageModel" in checked
    assert seqlab.SequenceClassifier.__doc__.lstrip().startswith("Many-to-one")


def test_every_recipe_setting_is_documented():
    from seqlab.tasks import TASK_NAMES, get_task
    from seqlab.tasks.settings import setting_docs

    for name in TASK_NAMES:
        docs = setting_docs(get_task(name).Config)
        assert {d[0] for d in docs} == set(vars(get_task(name).Config()))
        missing = [key for key, _default, meaning in docs if not meaning]
        assert not missing, f"{name}: settings without a meaning: {missing}"
