"""Recurrent(cell) on seqlab's own cells runs the layers' engine: values and every gradient
equal the layer (and torch.nn where it has a twin) in float64, alone, stacked and
bidirectional, with lengths; custom cells (a subclass overriding forward) keep the loop."""

from __future__ import annotations

import pytest
import torch

import seqlab
from helpers import TORCH_TWINS, assert_close
from seqlab.cells import make_cell
from seqlab.functional import SPECS
from seqlab.layers import make_layer
from seqlab.wrappers import engine_cell

F64 = torch.float64
KINDS = [name for name, spec in SPECS.items() if spec.kernel is not None]
T, B, I, H = 6, 3, 5, 4  # noqa: E741


def grads(out, leaves, seed=7):
    g = torch.Generator().manual_seed(seed)
    y, final = out
    loss = (y * torch.randn(y.shape, generator=g, dtype=F64)).sum()
    for s in (final,) if isinstance(final, torch.Tensor) else final:
        loss = loss + (s * torch.randn(s.shape, generator=g, dtype=F64)).sum()
    return torch.autograd.grad(loss, leaves)


def cell_from_layer(kind, layer, suffix):
    """A cell holding (views of) one layer direction's parameters."""
    cell = make_cell(kind, layer.params(suffix)["w_ih"].shape[1], H).to(F64)
    for p in cell.spec.params:
        setattr(cell, p.attr, getattr(layer, p.attr + suffix))
    return cell


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("lengths", [None, [6, 2, 4]])
@pytest.mark.parametrize("reverse", [False, True])
def test_recurrent_cell_equals_layer(kind, lengths, reverse):
    torch.manual_seed(0)
    layer = make_layer(kind, I, H, bidirectional=reverse).to(F64)
    suffix = "_l0_reverse" if reverse else "_l0"
    cell = cell_from_layer(kind, layer, suffix)
    assert engine_cell(cell) is cell  # the fast path is taken
    x = torch.randn(T, B, I, dtype=F64, requires_grad=True)
    lens = None if lengths is None else torch.tensor(lengths)
    got = seqlab.Recurrent(cell, reverse=reverse)(x, lengths=lens)
    y, final = layer(x, lengths=lens)
    if reverse:  # the layer's backward direction: second half of the features, row 1
        y = y[..., H:]
        final = cell.spec.pack(tuple(s[1] for s in cell.spec.unpack(final)))
    else:
        final = cell.spec.pack(tuple(s[0] for s in cell.spec.unpack(final)))
    leaves = [x, *cell.parameters()]
    assert_close(got[0], y, F64, "outputs")
    for a, b in zip(cell.spec.unpack(got[1]), cell.spec.unpack(final), strict=True):
        assert_close(a, b, F64, "final state")
    for k, (a, b) in enumerate(zip(grads(got, leaves), grads((y, final), leaves), strict=True)):
        assert_close(a, b, F64, f"gradient {k}")


@pytest.mark.parametrize("kind", KINDS)
def test_stacked_bidirectional_cells_equal_layer_and_torch(kind):
    """Stacked(Bidirectional(Recurrent(cell), Recurrent(cell)) × 2) == the 2-layer
    bidirectional layer, and == torch.nn where it has a twin (via a packed sequence),
    batch first, with lengths."""
    torch.manual_seed(1)
    layer = make_layer(kind, I, H, num_layers=2, bidirectional=True, batch_first=True).to(F64)
    ref = None
    if kind in TORCH_TWINS:
        _, torch_cls, kwargs = TORCH_TWINS[kind]
        ref = torch_cls(I, H, num_layers=2, bidirectional=True, batch_first=True, **kwargs)
        ref = ref.to(F64)
        layer.load_state_dict(ref.state_dict())
    stack = seqlab.Stacked(
        [
            seqlab.Bidirectional(
                seqlab.Recurrent(cell_from_layer(kind, layer, f"_l{k}"), batch_first=True),
                seqlab.Recurrent(cell_from_layer(kind, layer, f"_l{k}_reverse"), batch_first=True),
            )
            for k in range(2)
        ]
    )
    x = torch.randn(B, T, I, dtype=F64, requires_grad=True)
    lens = torch.tensor([6, 2, 4])
    y, finals = stack(x, lengths=lens)
    y_layer, final_layer = layer(x, lengths=lens)
    spec = layer.spec
    ours_final = [s for pair in finals for direction in pair for s in [spec.unpack(direction)]]
    for part in range(len(spec.state)):
        got = torch.stack([f[part] for f in ours_final])
        assert_close(got, spec.unpack(final_layer)[part], F64, f"final state part {part}")
    leaves = [x, *layer.parameters()]
    g = torch.randn(y.shape, dtype=F64)
    assert_close(y, y_layer, F64, "outputs vs the layer")
    got = torch.autograd.grad((y * g).sum(), leaves, retain_graph=True)
    for a, b in zip(got, torch.autograd.grad((y_layer * g).sum(), leaves), strict=True):
        assert_close(a, b, F64, "gradients vs the layer")
    if ref is not None:
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, lens, True, enforce_sorted=False)
        y_ref, _ = torch.nn.utils.rnn.pad_packed_sequence(ref(packed)[0], True, total_length=T)
        assert_close(y, y_ref, F64, "outputs vs torch.nn")
        want = torch.autograd.grad((y_ref * g).sum(), [x, *ref.parameters()])
        for a, b in zip(got, want, strict=True):
            assert_close(a, b, F64, "gradients vs torch.nn")


class LoggingLSTMCell(seqlab.LSTMCell):
    """A custom cell: overriding forward means Recurrent must call it every step."""

    def forward(self, x, state=None):
        self.calls = getattr(self, "calls", 0) + 1
        return super().forward(x, state)


def test_custom_subclass_keeps_reference_loop():
    torch.manual_seed(2)
    cell = LoggingLSTMCell(I, H).to(F64)
    assert engine_cell(cell) is None
    x = torch.randn(T, B, I, dtype=F64)
    y, final = seqlab.Recurrent(cell)(x, lengths=torch.tensor([6, 2, 4]))
    assert cell.calls == T
    plain = seqlab.LSTMCell(I, H).to(F64)
    plain.load_state_dict(cell.state_dict())
    y2, final2 = seqlab.Recurrent(plain)(x, lengths=torch.tensor([6, 2, 4]))
    assert_close(y, y2, F64, "outputs")
    assert_close(final.c, final2.c, F64, "c")


def test_recurrent_checks_state_of_own_cells():
    cell = seqlab.LSTMCell(I, H)
    with pytest.raises(ValueError, match=r"state.c: expected shape \(3, 4\), got \(3, 5\)"):
        seqlab.Recurrent(cell)(torch.randn(T, B, I), (torch.zeros(B, H), torch.zeros(B, 5)))
