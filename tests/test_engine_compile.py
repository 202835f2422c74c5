"""torch.compile and torch.export of models using seqlab layers on the native backend:
compiled forward and backward equal eager (values and every parameter gradient), and the
compiled graphs call the native kernels through the traceable ``seqlab::recurrence`` op."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import seqlab
from seqlab.engine import native

pytestmark = pytest.mark.skipif(native.load() is None, reason="native engine unavailable")

CASES = {
    "lstm-1": lambda: seqlab.LSTM(3, 4, backend="native"),
    "gru-2-bi": lambda: seqlab.GRU(3, 4, num_layers=2, bidirectional=True, backend="native"),
    "rnn-bi": lambda: seqlab.RNN(3, 4, bidirectional=True, backend="native"),
    "lstm-2-bi": lambda: seqlab.LSTM(3, 4, num_layers=2, bidirectional=True, backend="native"),
    "gru-before": lambda: seqlab.GRU(3, 4, reset_after=False, backend="native"),
    "rnn-relu-2": lambda: seqlab.RNN(3, 4, num_layers=2, nonlinearity="relu", backend="native"),
    "lstm-bi-torch": lambda: seqlab.LSTM(3, 4, bidirectional=True, backend="torch"),
}


def _loss(y, state):
    parts = state if isinstance(state, tuple) else (state,)
    return (y * y).sum() + sum((p * torch.arange(p.numel()).view_as(p)).sum() for p in parts)


def _run(model, x, lengths):
    model.zero_grad()
    y, state = model(x, lengths=lengths)
    _loss(y, state).backward()
    return y.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize(
    "case",
    [
        "lstm-1",
        "gru-2-bi",
        "rnn-bi",
        pytest.param("lstm-2-bi", marks=pytest.mark.slow),
        pytest.param("gru-before", marks=pytest.mark.slow),
        pytest.param("rnn-relu-2", marks=pytest.mark.slow),
        pytest.param("lstm-bi-torch", marks=pytest.mark.slow),  # the torch backend too
    ],
)
def test_compile_forward_backward_equal_eager(case):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = CASES[case]()
    compiled = torch.compile(model)
    # a second shape: the compiled graph is reused with symbolic sizes, or recompiled
    for lengths in (torch.tensor([5, 2, 4]), torch.tensor([3, 7])):
        x = torch.randn(int(lengths.max()), len(lengths), 3)
        y_eager, g_eager = _run(model, x, lengths)
        y_comp, g_comp = _run(compiled, x, lengths)
        torch.testing.assert_close(y_comp, y_eager, rtol=1e-5, atol=1e-6)
        assert len(g_comp) == len(g_eager)
        for a, b in zip(g_comp, g_eager, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_compiled_graph_calls_the_native_op():
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = seqlab.LSTM(3, 4, backend="native")
    explained = torch._dynamo.explain(model)(torch.randn(4, 2, 3))
    code = "\n".join(g.code for g in explained.graphs)
    assert "seqlab.recurrence" in code or "seqlab_recurrence" in code, code


class _Tagger(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = seqlab.LSTM(3, 4, num_layers=2, backend="native")
        self.out = torch.nn.Linear(4, 2)

    def forward(self, x):
        y, (h, c) = self.rnn(x)
        return self.out(y), h, c


@pytest.mark.parametrize("grad", [False, True])
def test_export_inference_equals_eager(grad):
    torch.manual_seed(0)
    model = _Tagger().eval()
    x = torch.randn(6, 2, 3)
    with torch.set_grad_enabled(grad):
        program = torch.export.export(model, (x,))
    assert "seqlab.recurrence" in program.graph_module.code
    x2 = torch.randn(6, 2, 3)  # other values, same shapes
    with torch.no_grad():
        for got, want in zip(program.module()(x2), model(x2), strict=True):
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


def test_fullgraph_without_lengths():
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = seqlab.GRU(3, 4, bidirectional=True, backend="native")
    x = torch.randn(5, 2, 3)
    y_eager, g_eager = _run(model, x, None)
    y_comp, g_comp = _run(torch.compile(model, fullgraph=True), x, None)
    torch.testing.assert_close(y_comp, y_eager, rtol=1e-5, atol=1e-6)
    for a, b in zip(g_comp, g_eager, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_engine_import_does_not_load_dynamo():
    # the compile support must not make `import seqlab.engine` pay for torch._dynamo
    code = "import sys, seqlab.engine; assert 'torch._dynamo' not in sys.modules"
    env = dict(os.environ)
    src = os.path.join(os.path.dirname(__file__), "..", "src")
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    subprocess.run([sys.executable, "-c", code], env=env, check=True)


def test_fullgraph_with_lengths():
    """``lengths`` compile into one graph: their range check is an assertion inside it
    (a Python check on the values would break the graph), so out-of-range lengths still
    raise when the compiled model runs."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = seqlab.LSTM(3, 4, bidirectional=True, backend="native")
    compiled = torch.compile(model, fullgraph=True)
    for lengths in (torch.tensor([5, 2, 4]), torch.tensor([3, 7])):  # unsorted; a second shape
        x = torch.randn(int(lengths.max()), len(lengths), 3)
        y_eager, g_eager = _run(model, x, lengths)
        y_comp, g_comp = _run(compiled, x, lengths)
        torch.testing.assert_close(y_comp, y_eager, rtol=1e-5, atol=1e-6)
        assert torch.all(y_comp[int(lengths.min()) :, int(lengths.argmin())] == 0)
        for a, b in zip(g_comp, g_eager, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    x = torch.randn(5, 3, 3)
    for bad in (torch.tensor([5, 0, 4]), torch.tensor([5, 6, 4])):
        with pytest.raises(RuntimeError, match=r"lengths: expected values in 1\.\.T"):
            compiled(x, lengths=bad)


def test_export_with_lengths_equals_eager():
    """torch.export with ``lengths`` (the range check is in the exported graph)."""
    torch.manual_seed(0)
    model = seqlab.GRU(3, 4, bidirectional=True, backend="native").eval()
    x, lengths = torch.randn(5, 3, 3), torch.tensor([5, 2, 4])
    with torch.no_grad():
        program = torch.export.export(model, (x,), {"lengths": lengths})
        x2, lengths2 = torch.randn(5, 3, 3), torch.tensor([3, 5, 1])  # same shapes
        for got, want in zip(
            program.module()(x2, lengths=lengths2), model(x2, lengths=lengths2), strict=True
        ):
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
        with pytest.raises(RuntimeError, match=r"lengths: expected values in 1\.\.T"):
            program.module()(x2, lengths=torch.tensor([5, 0, 4]))
