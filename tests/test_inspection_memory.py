"""Memory span readings against a known answer: a ReLU RNN with W_hh = a·I and positive
pre-activations has ∂L/∂h_t = a^(T−1−t) ∂L/∂h_(T−1) exactly (ReLU' = 1)."""

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import seqlab
from seqlab.inspection.memory import MemorySpan, measure


class Linearish(nn.Module):
    def __init__(self, a: float) -> None:
        super().__init__()
        self.rnn = seqlab.RNN(2, 3, nonlinearity="relu", batch_first=True).double()
        with torch.no_grad():
            self.rnn.weight_hh_l0.copy_(a * torch.eye(3))
            self.rnn.weight_ih_l0.fill_(0.5)
            self.rnn.bias_ih_l0.zero_()
            self.rnn.bias_hh_l0.zero_()

    def forward(self, x):
        return self.rnn(x)[0]


def read(a: float, T: int = 10):
    x = torch.rand(1, T, 2, dtype=torch.float64) + 0.1  # positive inputs: ReLU stays linear
    return measure(Linearish(a), x, lambda out, _s: out[:, -1].sum(), part="rnn")


@pytest.mark.parametrize(
    ("a", "span", "warning"),
    [(0.5, 6, None), (0.1, 2, "vanishing"), (3.0, 9, "exploding")],
)
def test_known_answers(a, span, warning):
    r = read(a)
    # 0.5^6 = 0.016 ≥ 0.01 > 0.5^7; 0.1^2 = 0.01 ≥ 0.01; growth keeps every step
    assert r["memory_span"] == span
    assert r["grad_ratio"] == pytest.approx(a**9, rel=1e-9)
    assert r["warning"] == warning
    norms = r["grad_norms"]
    assert norms[-1] == pytest.approx(math.sqrt(3))  # ∂(Σ h)/∂h = 1 for each of 3 units


def test_callback_every_n_steps_emits_and_logs():
    model = Linearish(0.5)
    x = torch.rand(1, 8, 2, dtype=torch.float64) + 0.1
    events, scalars = [], []
    tb = SimpleNamespace(scalars=lambda step, values: scalars.append((step, values)))
    cb = MemorySpan(x, lambda out, _s: out[:, -1].sum(), every=2, part="rnn",
                    emit=events.append, tensorboard=tb)  # fmt: skip
    model.train()
    for step in range(1, 6):
        cb(SimpleNamespace(step=step, model=model), {})
    assert [e["step"] for e in events] == [2, 4] and events[0]["kind"] == "memory"
    assert [s for s, _ in scalars] == [2, 4] and set(scalars[0][1]) == {"memory_span", "grad_ratio"}
    assert model.training  # restored after the eval-mode measurement
    fig = cb.figure()
    assert len(fig.axes) == 2 and fig.axes[1].get_yscale() == "log"
    with pytest.raises(ValueError, match="every: expected >= 1"):
        MemorySpan(x, None, every=0)
