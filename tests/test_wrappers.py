"""Recurrent(cell) with a toy cell defined only here (acceptance 6), Bidirectional,
Stacked, TimeDistributed."""

from typing import NamedTuple

import pytest
import torch
from torch import nn

import seqlab
from helpers import assert_close

F64 = torch.float64


class CounterState(NamedTuple):
    total: torch.Tensor  # (B, F) running sum of inputs
    steps: torch.Tensor  # (B, 1) number of steps seen


class RunningMeanCell(nn.Module):
    """Toy cell: outputs the running mean of its inputs, scaled by a learnable weight."""

    hidden_size = 2

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(2.0, dtype=F64))

    def initial_state(self, batch_size, *, dtype=None, device=None):
        return CounterState(
            torch.zeros(batch_size, 2, dtype=dtype, device=device),
            torch.zeros(batch_size, 1, dtype=dtype, device=device),
        )

    def forward(self, x, state):
        total, steps = state.total + x, state.steps + 1
        return self.scale * total / steps, CounterState(total, steps)


def test_recurrent_runs_a_toy_cell_with_lengths():
    x = torch.randn(5, 3, 2, dtype=F64, requires_grad=True)
    lengths = torch.tensor([5, 2, 3])
    out, final = seqlab.Recurrent(RunningMeanCell())(x, lengths=lengths)
    for b, n in enumerate(lengths.tolist()):
        prefix_means = x[:n, b].cumsum(0) / torch.arange(1, n + 1, dtype=F64).unsqueeze(1)
        assert_close(out[:n, b], 2 * prefix_means, F64, "running means")
        assert torch.count_nonzero(out[n:, b]) == 0
        assert final.steps[b].item() == n
        assert_close(final.total[b], x[:n, b].sum(0), F64, "final total")
    out.sum().backward()
    assert x.grad[4, 1].abs().sum() == 0  # padding never influences anything


def test_bidirectional_toy_cell_reads_valid_prefix_backwards():
    bi = seqlab.Bidirectional(
        seqlab.Recurrent(RunningMeanCell(), batch_first=True),
        seqlab.Recurrent(RunningMeanCell(), batch_first=True),
    )
    x = torch.randn(2, 4, 2, dtype=F64)
    lengths = torch.tensor([4, 3])
    out, (f_fwd, f_bwd) = bi(x, lengths=lengths)
    assert out.shape == (2, 4, 4)
    for b, n in enumerate(lengths.tolist()):
        rev = x[b, :n].flip(0)
        suffix_means = (rev.cumsum(0) / torch.arange(1, n + 1, dtype=F64).unsqueeze(1)).flip(0)
        assert_close(out[b, :n, 2:], 2 * suffix_means, F64, "backward half")
        assert_close(f_bwd.total[b], x[b, :n].sum(0), F64, "backward final")
        assert torch.count_nonzero(out[b, n:]) == 0


def test_composed_stack_equals_builtin_layer():
    """Stacked(Bidirectional(Recurrent(LSTMCell))) == seqlab.LSTM with the same weights."""
    ref = seqlab.LSTM(3, 4, num_layers=2, bidirectional=True).double()

    def cell(suffix, inp):
        c = seqlab.LSTMCell(inp, 4).double()
        c.load_state_dict(
            {k.removesuffix(suffix): v for k, v in ref.state_dict().items() if k.endswith(suffix)}
        )
        return seqlab.Recurrent(c)

    stack = seqlab.Stacked(
        [
            seqlab.Bidirectional(cell("_l0", 3), cell("_l0_reverse", 3)),
            seqlab.Bidirectional(cell("_l1", 8), cell("_l1_reverse", 8)),
        ]
    )
    x = torch.randn(6, 2, 3, dtype=F64)
    lengths = torch.tensor([6, 4])
    out, finals = stack(x, lengths=lengths)
    ref_out, (h_n, c_n) = ref(x, lengths=lengths)
    assert_close(out, ref_out, F64, "outputs")
    assert_close(finals[1][1].h, h_n[3], F64, "top backward h")
    assert_close(finals[0][0].c, c_n[0], F64, "bottom forward c")


def test_time_distributed_applies_per_step():
    head = nn.Linear(4, 3).double()
    x = torch.randn(5, 2, 4, dtype=F64)
    y = seqlab.TimeDistributed(head)(x)
    for t in range(5):
        assert_close(y[t], head(x[t]), F64, f"step {t}")


def test_wrapper_errors():
    with pytest.raises(TypeError, match="cell"):
        seqlab.Recurrent(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="merge"):
        seqlab.Bidirectional(
            seqlab.Recurrent(RunningMeanCell()), seqlab.Recurrent(RunningMeanCell()), merge="avg"
        )
    rec = seqlab.Recurrent(RunningMeanCell())
    with pytest.raises(ValueError, match=r"input: expected shape \(time, batch, \.\.\.\)"):
        rec(torch.randn(7, 2, dtype=F64))
    bad = CounterState(torch.zeros(5, 2, dtype=F64), torch.zeros(5, 1, dtype=F64))
    with pytest.raises(ValueError, match=r"state\[0\]: expected batch size 7"):
        rec(torch.randn(3, 7, 2, dtype=F64), bad)
