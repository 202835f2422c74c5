"""Bad input raises ValueError/TypeError naming the argument, expected vs actual (acceptance 8).

Sizes are prime (7) so that a message can only match if it reports the real numbers."""

import pytest
import torch

import seqlab

LAYERS = [
    ("rnn", lambda: seqlab.RNN(7, 11, num_layers=2)),
    ("lstm", lambda: seqlab.LSTM(7, 11, num_layers=2)),
    ("gru", lambda: seqlab.GRU(7, 11, num_layers=2)),
]


def state_for(kind, *shape, dtype=torch.float32):
    h = torch.zeros(*shape, dtype=dtype)
    return (h, h.clone()) if kind == "lstm" else h


@pytest.mark.parametrize("kind,make", LAYERS, ids=[k for k, _ in LAYERS])
class TestLayerErrors:
    def test_wrong_rank(self, kind, make):
        with pytest.raises(
            ValueError,
            match=r"input: expected shape \(time, batch, features\) "
            r"with features=7.*got \(3, 5, 2, 7\)",
        ):
            make()(torch.randn(3, 5, 2, 7))

    def test_wrong_feature_size(self, kind, make):
        with pytest.raises(ValueError, match=r"input: .*features=7.*got \(3, 5, 13\)"):
            make()(torch.randn(3, 5, 13))

    def test_integer_input(self, kind, make):
        with pytest.raises(
            TypeError, match="input: expected a floating-point tensor, got dtype torch.int64"
        ):
            make()(torch.ones(3, 5, 7, dtype=torch.long))

    def test_state_wrong_shape(self, kind, make):
        with pytest.raises(
            ValueError, match=r"state.h0: expected shape \(2, 5, 11\), got \(1, 5, 11\)"
        ):
            make()(torch.randn(3, 5, 7), state_for(kind, 1, 5, 11))

    def test_state_wrong_count(self, kind, make):
        wrong = torch.zeros(2, 5, 11) if kind == "lstm" else (torch.zeros(2, 5, 11),) * 2
        expected = "2 tensor" if kind == "lstm" else "1 tensor"
        with pytest.raises(
            ValueError, match=f"state: expected {expected}.*got {1 if kind == 'lstm' else 2}"
        ):
            make()(torch.randn(3, 5, 7), wrong)

    def test_state_dtype_mismatch(self, kind, make):
        with pytest.raises(
            TypeError,
            match=r"state.h0: expected dtype torch.float32 \(as input\), "
            r"got torch.float64",
        ):
            make()(torch.randn(3, 5, 7), state_for(kind, 2, 5, 11, dtype=torch.float64))

    def test_lengths_out_of_range(self, kind, make):
        with pytest.raises(
            ValueError, match=r"lengths: expected values in 1\.\.3 .*got min 0, max 3"
        ):
            make()(torch.randn(3, 5, 7), lengths=torch.tensor([3, 0, 1, 2, 3]))
        with pytest.raises(ValueError, match=r"lengths: expected values in 1\.\.3 .*max 7"):
            make()(torch.randn(3, 5, 7), lengths=torch.tensor([3, 7, 1, 2, 3]))

    def test_lengths_wrong_batch(self, kind, make):
        with pytest.raises(ValueError, match=r"lengths: expected shape \(5,\) .*got \(7,\)"):
            make()(torch.randn(3, 5, 7), lengths=torch.ones(7, dtype=torch.long))

    def test_lengths_float(self, kind, make):
        with pytest.raises(TypeError, match="lengths: expected an integer tensor"):
            make()(torch.randn(3, 5, 7), lengths=torch.ones(5))


def test_device_mismatch_is_reported():
    # the check is device-agnostic, so the meta device stands in for a GPU here
    x = torch.randn(3, 5, 7)
    h = torch.zeros(1, 5, 11, device="meta")
    with pytest.raises(ValueError, match=r"state.h0: expected device cpu \(as input\), got meta"):
        seqlab.GRU(7, 11)(x, h)


def test_cell_errors():
    cell = seqlab.LSTMCell(7, 11)
    with pytest.raises(ValueError, match=r"input: expected shape \(batch, 7\), got \(5, 13\)"):
        cell(torch.randn(5, 13))
    with pytest.raises(ValueError, match=r"state.c: expected shape \(5, 11\), got \(5, 7\)"):
        cell(torch.randn(5, 7), (torch.zeros(5, 11), torch.zeros(5, 7)))
    with pytest.raises(ValueError, match="state: expected 2 tensor"):
        cell(torch.randn(5, 7), torch.zeros(5, 11))
    with pytest.raises(TypeError, match="input: expected a torch.Tensor, got list"):
        cell([[1.0] * 7])


def test_constructor_errors():
    with pytest.raises(ValueError, match="hidden_size: expected a positive int, got 0"):
        seqlab.LSTM(7, 0)
    with pytest.raises(ValueError, match="num_layers: expected a positive int, got -7"):
        seqlab.GRU(7, 11, num_layers=-7)
    with pytest.raises(ValueError, match="nonlinearity: expected 'tanh' or 'relu', got 'sigmoid'"):
        seqlab.RNN(7, 11, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match=r"dropout: expected a probability in \[0, 1\], got 1.5"):
        seqlab.LSTM(7, 11, dropout=1.5)
