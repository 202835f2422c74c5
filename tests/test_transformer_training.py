"""The Transformers under seqlab.training.Trainer through their ``loss(batch)`` methods."""

import pytest
import torch

from seqlab.transformer import TransformerLM, TransformerSeq2Seq

training = pytest.importorskip("seqlab.training")


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models are op-overhead bound: one thread avoids OpenMP sync cost on busy machines."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_trainer_fits_transformer_lm_on_token_streams():
    text = "attention is all you need, said the paper. " * 8
    vocab = sorted(set(text))
    ids = torch.tensor([vocab.index(ch) for ch in text])
    lm = TransformerLM(len(vocab), d_model=32, nhead=4, num_layers=1, dim_feedforward=64)
    data = training.TokenStreams(ids, batch_size=4, seq_len=16)
    with torch.no_grad():
        first = lm.eval().loss(next(iter(data))).item()
    cfg = training.TrainConfig(epochs=None, max_steps=60, lr=3e-3, clip_norm=1.0, seed=0)
    result = training.Trainer(lm, data, cfg).fit()
    assert result.steps == 60
    with torch.no_grad():
        last = lm.eval().loss(next(iter(data))).item()
    assert last < 0.5 * first


def test_trainer_fits_transformer_seq2seq_copy_task():
    gen = torch.Generator().manual_seed(0)
    src = torch.randint(3, 9, (32, 5), generator=gen)
    tgt = torch.cat([torch.ones(32, 1, dtype=torch.long), src, torch.full((32, 1), 2)], dim=1)
    batches = [{"src": src[i : i + 8], "tgt": tgt[i : i + 8]} for i in range(0, 32, 8)]
    model = TransformerSeq2Seq(9, 9, d_model=32, nhead=4, num_encoder_layers=1,
                               num_decoder_layers=1, dim_feedforward=64, dropout=0.0)  # fmt: skip
    with torch.no_grad():
        first = model.eval().loss(batches[0]).item()
    cfg = training.TrainConfig(epochs=40, lr=3e-3, seed=0)
    training.Trainer(model, batches, cfg).fit()
    with torch.no_grad():
        last = model.eval().loss(batches[0]).item()
    assert last < 0.3 * first, (first, last)
