"""The fast subset of the fuzz suite (``fuzz_cases.py``; the long campaign is ``make fuzz``).

Every generated case must be correct (agree with its oracle: torch.nn with the same weights,
a hand-written loop, exhaustive search) or a clear error (ValueError/TypeError naming the
invalid argument). Cases in regions that other work owns are skipped here; their
reproducers below are strict xfails, which start passing when that work lands.
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


# Known failures found by the campaign, owned by the core refactor (issue 12).
CORE = "core refactor (issue 12) owns layers/wrappers/validation"


@pytest.mark.xfail(strict=True, reason=CORE + ": T=0 output shape of a 1-layer LSTM")
def test_lstm_with_zero_steps_returns_empty_outputs_and_the_initial_state():
    lstm = seqlab.LSTM(2, 3)
    out, (h, c) = lstm(torch.zeros(0, 4, 2))
    assert out.shape == (0, 4, 3) and torch.equal(h, torch.zeros(1, 4, 3))


@pytest.mark.xfail(strict=True, reason=CORE + ": T=0 through a 2-layer GRU")
def test_two_layer_gru_with_zero_steps():
    out, h = seqlab.GRU(4, 3, num_layers=2)(torch.zeros(0, 2, 4))
    assert out.shape == (0, 2, 3) and h.shape == (2, 2, 3)


@pytest.mark.xfail(strict=True, reason=CORE + ": T=0 output shape of Recurrent")
def test_recurrent_with_zero_steps():
    out, _ = seqlab.Recurrent(seqlab.GRUCell(3, 2))(torch.zeros(0, 1, 3))
    assert out.shape == (0, 1, 2)


def test_bidirectional_with_zero_steps():
    f, b = seqlab.Recurrent(seqlab.RNNCell(2, 3)), seqlab.Recurrent(seqlab.RNNCell(2, 3))
    out, _ = seqlab.Bidirectional(f, b, merge="mean")(torch.zeros(0, 3, 2))
    assert out.shape == (0, 3, 3)


@pytest.mark.xfail(strict=True, reason=CORE + ": TimeDistributed checks its input dtype")
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
