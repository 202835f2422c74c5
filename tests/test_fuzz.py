"""The fast subset of the fuzz suite (``fuzz_cases.py``; the long campaign is ``make fuzz``).

Every generated case must be correct (agree with its oracle: torch.nn with the same weights,
a hand-written loop, exhaustive search) or a clear error (ValueError/TypeError naming the
invalid argument). Cases in regions that other work owns (``case.known``) are skipped here;
reproducers of failures found by the campaign and fixed since are pinned below.
"""

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings

import seqlab
from fuzz_cases import AREAS, classify


@pytest.mark.parametrize("area", sorted(AREAS))
def test_fuzz_area(area):
    @settings(
        max_examples=20,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(AREAS[area]())
    def case_is_correct_or_a_clear_error(case):
        assume(not case.known)
        outcome, detail = classify(case)
        assert outcome in ("correct", "clear error"), f"{outcome}: {case.what}\n{detail}"

    case_is_correct_or_a_clear_error()


# Reproducers of failures the campaign found, fixed since.


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN"])
def test_layers_refuse_zero_steps_as_torch_nn_does(mode, layers):
    """torch.nn raises RuntimeError for T=0 (issue 14 asks for its behaviour); so does seqlab,
    with an error that is also a ValueError and names the argument."""
    x = torch.zeros(0, 4, 2)
    with pytest.raises(RuntimeError, match="sequence length to be larger than 0"):
        getattr(torch.nn, mode)(2, 3, num_layers=layers)(x)
    with pytest.raises(RuntimeError, match="input: expected sequence length") as err:
        getattr(seqlab, mode)(2, 3, num_layers=layers)(x)
    assert isinstance(err.value, ValueError)


def test_recurrent_with_zero_steps():
    out, h = seqlab.Recurrent(seqlab.GRUCell(3, 2))(torch.zeros(0, 1, 3))
    assert out.shape == (0, 1, 2) and torch.equal(h, torch.zeros(1, 2))


def test_recurrent_with_zero_steps_returns_the_given_state():
    h0, c0 = torch.randn(2, 4), torch.randn(2, 4)
    rec = seqlab.Recurrent(seqlab.LSTMCell(3, 4), batch_first=True)
    out, (h, c) = rec(torch.zeros(2, 0, 3), (h0, c0))
    assert out.shape == (2, 0, 4) and torch.equal(h, h0) and torch.equal(c, c0)


class _WideOutputCell(torch.nn.Module):
    """A custom cell whose output (5 wide) is not its state (2 wide)."""

    hidden_size = 2

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 5)

    def initial_state(self, batch_size, dtype=None, device=None):
        return torch.zeros(batch_size, 2, dtype=dtype, device=device)

    def forward(self, x, state):
        return self.lin(x), state + 1


def test_recurrent_with_zero_steps_and_a_custom_cell_uses_its_output_width():
    out, h = seqlab.Recurrent(_WideOutputCell())(torch.zeros(0, 4, 3))
    assert out.shape == (0, 4, 5) and torch.equal(h, torch.zeros(4, 2))  # no step ran


def test_bidirectional_with_zero_steps():
    f, b = seqlab.Recurrent(seqlab.RNNCell(2, 3)), seqlab.Recurrent(seqlab.RNNCell(2, 3))
    out, _ = seqlab.Bidirectional(f, b, merge="mean")(torch.zeros(0, 3, 2))
    assert out.shape == (0, 3, 3)


@pytest.mark.parametrize("dtype", [torch.long, torch.complex64])
def test_time_distributed_refuses_a_non_float_input_by_name(dtype):
    with pytest.raises(TypeError, match="input"):
        seqlab.TimeDistributed(torch.nn.Linear(2, 3))(torch.ones(1, 2, 2, dtype=dtype))


def test_time_distributed_refuses_a_wrong_feature_count_by_name():
    with pytest.raises(RuntimeError):  # torch's own error, unnamed
        torch.nn.Linear(2, 3)(torch.ones(2, 4))
    with pytest.raises(ValueError, match="input: expected 2 features"):
        seqlab.TimeDistributed(torch.nn.Linear(2, 3))(torch.ones(1, 2, 4))


def test_time_distributed_keeps_token_ids_for_an_embedding():
    emb = torch.nn.Embedding(5, 3)
    ids = torch.tensor([[[1], [4]], [[0], [2]]])  # (T=2, B=2, 1)
    assert torch.equal(seqlab.TimeDistributed(emb)(ids), emb(ids))


def test_time_distributed_refuses_an_integer_input_by_name():
    with pytest.raises(TypeError, match="input"):
        seqlab.TimeDistributed(torch.nn.Linear(2, 3))(torch.ones(1, 2, 2, dtype=torch.long))


def test_cell_refuses_a_bool_hidden_size():
    with pytest.raises(ValueError, match="hidden_size"):
        seqlab.RNNCell(1, True)


def test_language_model_refuses_bool_lengths():
    lm = seqlab.LanguageModel(seqlab.LanguageModelConfig(3, 2, 2))
    with pytest.raises(TypeError, match="lengths"):
        lm(torch.zeros(2, 1, dtype=torch.long), None, torch.ones(2, dtype=torch.bool))
