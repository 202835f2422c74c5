"""The cell contract: seqlab's cells are called as torch.nn's (``hx = cell(x, hx)``) and
stepped by composition through ``step(x, state) -> (y, new_state)``; cells written to the
older contract (no ``step``) and Cell subclasses follow the documented rule (seqlab.cells)."""

import pytest
import torch
from torch import Tensor, nn

import seqlab
from helpers import assert_close
from seqlab.cells import Cell, cell_step, make_cell
from seqlab.functional import SPECS
from seqlab.functional.cells import LSTMState
from seqlab.wrappers import engine_cell

F64 = torch.float64
TWINS = [
    (seqlab.RNNCell, nn.RNNCell, {}),
    (seqlab.RNNCell, nn.RNNCell, {"nonlinearity": "relu"}),
    (seqlab.LSTMCell, nn.LSTMCell, {}),
    (seqlab.GRUCell, nn.GRUCell, {"bias": False}),
]


@pytest.mark.parametrize(
    ("ours_cls", "ref_cls", "kw"), TWINS, ids=["rnn_tanh", "rnn_relu", "lstm", "gru_nobias"]
)
@pytest.mark.parametrize("batched", [True, False])
def test_hx_loop_as_torch(ours_cls, ref_cls, kw, batched):
    """A torch.nn user's loop ``hx = cell(x_t, hx)`` from hx=None: every state and all
    gradients equal torch.nn's with the same weights."""
    torch.manual_seed(0)
    ref = ref_cls(3, 5, dtype=F64, **kw)
    ours = ours_cls(3, 5, dtype=F64, **kw)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(4, 2, 3, dtype=F64) if batched else torch.randn(4, 3, dtype=F64)
    results = []
    for cell in (ref, ours):
        xi = x.clone().requires_grad_()
        hx, hs = None, []
        for t in range(4):
            hx = cell(xi[t], hx)
            hs.append(hx if isinstance(hx, Tensor) else hx[0])
        loss = sum((h * (k + 1)).sum() for k, h in enumerate(hs))
        if not isinstance(hx, Tensor):
            loss = loss + hx[1].pow(2).sum()
        grads = torch.autograd.grad(loss, [xi, *cell.parameters()])
        results.append((type(hx), [h.detach() for h in hs], grads))
    (r_type, r_hs, r_grads), (o_type, o_hs, o_grads) = results
    assert (r_type is Tensor) == (o_type is Tensor)
    for a, b in zip(o_hs + list(o_grads), r_hs + list(r_grads), strict=True):
        assert_close(a, b, F64)


@pytest.mark.parametrize("kind", list(SPECS))
def test_every_kind_returns_h_or_its_state_tuple(kind):
    """The generic rule: forward returns ``h`` for a 1-part state and the kind's state tuple
    for a multi-part one; ``step`` returns ``(h, that state)``."""
    spec = SPECS[kind]
    cell = make_cell(kind, 3, 4).double()
    x = torch.randn(2, 3, dtype=F64)
    new = cell(x)
    y, stepped = cell.step(x)
    if len(spec.state) == 1:
        assert type(new) is Tensor and new.shape == (2, 4)
        assert type(stepped) is Tensor
        torch.testing.assert_close(y, new, rtol=0, atol=0)
        torch.testing.assert_close(stepped, new, rtol=0, atol=0)
    else:
        assert isinstance(new, tuple) and len(new) == len(spec.state)
        if spec.state_type is not None:
            assert type(new) is spec.state_type and type(stepped) is spec.state_type
        assert all(p.shape == (2, 4) for p in new)
        torch.testing.assert_close(y, new[0], rtol=0, atol=0)
        for a, b in zip(stepped, new, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    # a state fed back as returned is accepted (the loop form); unbatched gives (H,) parts
    again = cell(x, new)
    assert len(spec.unpack(again)) == len(spec.state)
    single = cell(x[0], tuple(p[0] for p in spec.unpack(new)) if len(spec.state) > 1 else new[0])
    for a, b in zip(spec.unpack(single), spec.unpack(again), strict=True):
        assert a.shape == (4,)
        torch.testing.assert_close(a, b[0])


class OldContractCell(nn.Module):
    """A user cell written to the older contract: forward returns (y, new_state), no step.
    h' = tanh(x W + h U); y = 2 h' (the output differs from the state)."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.w = nn.Linear(input_size, hidden_size)
        self.u = nn.Linear(hidden_size, hidden_size, bias=False)

    def initial_state(self, batch_size, dtype=None, device=None):
        return torch.zeros(batch_size, self.hidden_size, dtype=dtype, device=device)

    def forward(self, x, h):
        h = torch.tanh(self.w(x) + self.u(h))
        return 2 * h, h


def _hand_loop(fn, x, state, lengths=None, reverse=False):
    """Time-major hand loop of ``fn(x_t, s) -> (y, s)``, row by row (lengths, reverse)."""
    T, B = x.shape[:2]
    lengths = [T] * B if lengths is None else lengths.tolist()
    ys = torch.zeros(T, B, fn(x[0, :1], state[:1])[0].shape[-1], dtype=x.dtype)
    finals = []
    for b in range(B):
        s = state[b : b + 1]
        order = range(lengths[b])
        for t in reversed(order) if reverse else order:
            y, s = fn(x[t, b : b + 1], s)
            ys[t, b] = y[0]
        finals.append(s)
    return ys, torch.cat(finals)


def test_old_contract_cell_runs_under_composition():
    torch.manual_seed(1)
    cell = OldContractCell(3, 4).double()
    assert cell_step(cell) is cell  # no step: called the old way
    x, lengths = torch.randn(5, 3, 3, dtype=F64), torch.tensor([5, 2, 4])
    h0 = torch.zeros(3, 4, dtype=F64)
    for reverse in (False, True):
        out, final = seqlab.Recurrent(cell, reverse=reverse)(x, None, lengths)
        want, want_final = _hand_loop(cell.forward, x, h0, lengths, reverse)
        assert_close(out, want, F64, "outputs")
        assert_close(final, want_final, F64, "final")
    bi = seqlab.Bidirectional(seqlab.Recurrent(cell), seqlab.Recurrent(cell))
    out, _ = bi(x, None, lengths)
    fwd, _ = _hand_loop(cell.forward, x, h0, lengths)
    bwd, _ = _hand_loop(cell.forward, x, h0, lengths, reverse=True)
    assert_close(out, torch.cat([fwd, bwd], -1), F64, "bidirectional")


class ClampedGRUCell(seqlab.GRUCell):
    """A Cell subclass overriding forward only (torch.nn's return): h' clamped."""

    def forward(self, x, hx=None):
        return super().forward(x, hx).clamp(-0.2, 0.2)


class PeepLSTMCell(seqlab.LSTMCell):
    """A Cell subclass overriding forward only, returning a plain (h, c) tuple as torch."""

    def forward(self, x, hx=None):
        h, c = super().forward(x, hx)
        return (h * 0.5, c)


class DoubledOutputGRUCell(seqlab.GRUCell):
    """A Cell subclass overriding step: y = 2 h' (forward is untouched)."""

    def step(self, x, state=None):
        h = self(x, state)
        return 2 * h, h


class OldStyleSubclass(seqlab.GRUCell):
    """Wrong under the rule: a Cell subclass whose forward returns (y, new_state)."""

    def forward(self, x, hx=None):
        h = super().forward(x, hx)
        return h, h


def _torch_loop(cell, x, state):
    """Oracle for forward-only subclasses: the user's loop ``state = cell(x_t, state)``."""
    hs = []
    for t in range(x.shape[0]):
        state = cell(x[t], state)
        hs.append(state if isinstance(state, Tensor) else state[0])
    return torch.stack(hs), state


@pytest.mark.parametrize("cls", [ClampedGRUCell, PeepLSTMCell])
def test_subclass_overriding_forward_is_called_and_read_by_state_parts(cls):
    torch.manual_seed(2)
    cell = cls(3, 4).double()
    assert engine_cell(cell) is None  # its own forward must run, not the engine
    x = torch.randn(6, 2, 3, dtype=F64) * 3
    out, final = seqlab.Recurrent(cell)(x)
    want, want_final = _torch_loop(cell, x, None)
    assert_close(out, want, F64, "outputs")
    if cls is PeepLSTMCell:
        assert type(final) is LSTMState  # packed by the kind's state parts
        assert_close(final.h, want_final[0], F64, "h")
        assert_close(final.c, want_final[1], F64, "c")
    else:
        assert_close(final, want_final, F64, "h")
    # the override really ran: the plain cell with the same weights differs
    plain = (seqlab.GRUCell if cls is ClampedGRUCell else seqlab.LSTMCell)(3, 4).double()
    plain.load_state_dict(cell.state_dict())
    assert (seqlab.Recurrent(plain)(x)[0] - out).abs().max() > 1e-3


def test_subclass_overriding_step_is_stepped_by_composition():
    torch.manual_seed(3)
    cell = DoubledOutputGRUCell(3, 4).double()
    assert engine_cell(cell) is None
    x = torch.randn(5, 2, 3, dtype=F64)
    out, final = seqlab.Recurrent(cell)(x)
    hs, h = _torch_loop(cell, x, None)  # forward is torch.nn's GRUCell call
    assert_close(out, 2 * hs, F64, "outputs are step's y")
    assert_close(final, h, F64, "final")
    ref = nn.GRUCell(3, 4, dtype=F64)
    ref.load_state_dict(cell.state_dict())
    assert_close(cell(x[0]), ref(x[0]), F64, "forward stays torch.nn's")


def test_subclass_returning_y_and_state_from_forward_is_a_clear_error():
    cell = OldStyleSubclass(3, 4)
    with pytest.raises(TypeError, match=r"OldStyleSubclass\.forward.*override step"):
        seqlab.Recurrent(cell)(torch.randn(2, 1, 3))
    with pytest.raises(TypeError, match="expected the new state"):
        cell.step(torch.randn(1, 3))


def test_replaced_or_hooked_forward_runs_instead_of_the_engine():
    """A replaced ``step`` or a forward hook on a plain cell is honoured under Recurrent."""
    torch.manual_seed(4)
    cell = seqlab.RNNCell(3, 4).double()
    x = torch.randn(4, 2, 3, dtype=F64)
    plain, _ = seqlab.Recurrent(cell)(x)
    handle = cell.register_forward_hook(lambda m, args, out: out * 0)
    assert engine_cell(cell) is None
    out, final = seqlab.Recurrent(cell)(x)
    assert torch.count_nonzero(out) == 0 and torch.count_nonzero(final) == 0
    handle.remove()
    assert engine_cell(cell) is cell
    cell.step = lambda x_t, s: (x_t.new_ones(x_t.shape[0], 1), cell(x_t, s))
    assert engine_cell(cell) is None
    out, final = seqlab.Recurrent(cell)(x)
    assert out.shape == (4, 2, 1) and torch.all(out == 1)
    assert_close(final, _torch_loop(cell, x, None)[1], F64, "final")
    del cell.step
    assert_close(seqlab.Recurrent(cell)(x)[0], plain, F64, "engine again")


def test_every_kind_under_recurrent_equals_the_loop_over_its_forward():
    """Every registered kind under Recurrent equals the user's loop over its forward."""
    torch.manual_seed(5)
    x = torch.randn(4, 2, 3, dtype=F64)
    for kind in SPECS:
        cell = Cell(kind, 3, 4).double()
        out, final = seqlab.Recurrent(cell)(x)
        want, want_final = _torch_loop(cell, x, None)
        assert_close(out, want, F64, kind)
        spec = SPECS[kind]
        for a, b in zip(spec.unpack(final), spec.unpack(want_final), strict=True):
            assert_close(a, b, F64, kind)
