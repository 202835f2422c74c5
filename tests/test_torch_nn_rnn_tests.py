"""Counterparts of the RNN tests in PyTorch's ``test/test_nn.py`` that apply to a CPU
reimplementation (issue 14, acceptance 2). Written by us from what each torch test checks;
torch.nn, with copied weights, is the oracle wherever a value is compared.

PyTorch test (test_nn.py) -> counterpart (here unless a file is named):

- test_RNN_cell, test_LSTM_cell (``hx = cell(x, hx)``) ->
  test_cell_contract.py::test_hx_loop_as_torch
- test_RNN_cell_forward_zero_hidden_size ->
  test_torch_parity.py::test_cells_take_zero_sizes_as_torch
- test_RNN_cell_no_broadcasting -> test_cells_refuse_a_batch_mismatch
- the cells' wrong input / hidden sizes -> test_cells_refuse_wrong_sizes
- test_rnn_args_check -> test_rnn_args_check
- test_projections_lstm_args_check -> test_projections_lstm_args_check
- test_rnn_initial_hidden_state, test_projections_lstm_initial_hidden_state ->
  test_initial_hidden_state (also test_layers_vs_torch.py::test_state_none_equals_zeros_...)
- test_variable_sequence (sorted and unsorted packing, proj_size) -> test_variable_sequence
- test_RNN_dropout (p = 0, 0.276, 0.731, 1) -> test_dropout_known_values
- test_RNN_dropout_state (pickle, flatten_parameters) -> test_dropout_state_and_flatten_parameters
- test_RNN_change_dropout -> test_change_dropout
- test_LSTM_grad_and_gradgrad, test_GRU_grad_and_gradgrad -> test_grad_and_gradgrad
- test_RNN_input_size_zero (a batch of 0) -> test_input_size_zero
- test_error_RNN_seq_len_zero -> test_error_seq_len_zero
- test_rnn_retain_variables -> test_retain_variables
- test_rnn_weight_norm -> test_weight_norm_flat_weights (also
  test_torch_parity.py::test_weight_norm_matches_torch)
- test_RNN_nonlinearity, test_RNN_nonlinearity_passed_as_arg -> test_nonlinearity

Not carried over: the cuDNN/CUDA/multi-GPU tests (cpu_vs_cudnn, cudnn_weight_format/tying,
check_device, partial_flat_weights on CUDA, rnn_fused).
"""

from __future__ import annotations

import io
import warnings
from copy import deepcopy

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import seqlab

F64 = torch.float64
MODES = ("RNN", "GRU", "LSTM")


def _twins(mode: str, *args, **kwargs):
    """(seqlab, torch.nn) layers with the same weights."""
    ours = getattr(seqlab, mode)(*args, **kwargs)
    ref = getattr(nn, mode)(*args, **kwargs)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def _raises_runtime_error_in_both(ours, ref, *args) -> None:
    for module in (ref, ours):
        with pytest.raises(RuntimeError):
            module(*args)


# ------------------------------------------------------------------------------- cells
@pytest.mark.parametrize("mode", ["RNNCell", "GRUCell", "LSTMCell"])
def test_cells_refuse_a_batch_mismatch(mode):
    """No broadcasting between the input's batch and the state's (either part)."""
    ours, ref = getattr(seqlab, mode)(10, 20), getattr(nn, mode)(10, 20)
    x = torch.randn(3, 10)
    if mode == "LSTMCell":
        for h, c in (
            (torch.randn(1, 20), torch.randn(3, 20)),
            (torch.randn(3, 20), torch.randn(1, 20)),
        ):
            _raises_runtime_error_in_both(ours, ref, x, (h, c))
    else:
        _raises_runtime_error_in_both(ours, ref, x, torch.randn(1, 20))
    _raises_runtime_error_in_both(
        ours,
        ref,
        torch.randn(1, 10),
        torch.randn(3, 20) if mode != "LSTMCell" else (torch.randn(3, 20),) * 2,
    )


@pytest.mark.parametrize("mode", ["RNNCell", "GRUCell", "LSTMCell"])
def test_cells_refuse_wrong_sizes(mode):
    """A wrong input size, a wrong hidden size (each state part) are RuntimeErrors."""
    ours, ref = getattr(seqlab, mode)(10, 20), getattr(nn, mode)(10, 20)
    good = torch.randn(3, 20)
    _raises_runtime_error_in_both(
        ours, ref, torch.randn(3, 11), (good, good) if mode == "LSTMCell" else good
    )
    bad = torch.randn(3, 21)
    states = [(bad, good), (good, bad)] if mode == "LSTMCell" else [bad]
    for state in states:
        _raises_runtime_error_in_both(ours, ref, torch.randn(3, 10), state)


# ----------------------------------------------------------------------- argument checks
def _bad(shape, dim, size=7):  # 7: prime, so no size divides it
    shape = list(shape)
    shape[dim] = size
    return tuple(shape)


@pytest.mark.parametrize("mode", MODES)
def test_rnn_args_check(mode):
    """Wrong input batch, state batch, input size, hidden size or state layer count:
    RuntimeError from both (LSTM: with each of h and c wrong in turn)."""
    I, H, L, B, T = 3, 5, 2, 4, 6  # noqa: E741
    ours, ref = _twins(mode, I, H, L)
    x_shape, h_shape = (T, B, I), (L, B, H)
    cases = [
        (_bad(x_shape, 1), h_shape),
        (x_shape, _bad(h_shape, 1)),
        (_bad(x_shape, 2), h_shape),
        (x_shape, _bad(h_shape, 2)),
        (x_shape, _bad(h_shape, 0)),
    ]
    for xs, hs in cases:
        x, h = torch.randn(xs), torch.randn(hs)
        if mode != "LSTM":
            states = [h]
        elif hs == h_shape:
            states = [(h, h)]
        else:
            good = torch.randn(h_shape)
            states = [(h, good), (good, h)]
        for state in states:
            _raises_runtime_error_in_both(ours, ref, x, state)


def test_projections_lstm_args_check():
    I, H, P, L, B, T = 3, 5, 2, 2, 4, 6  # noqa: E741
    ours, ref = _twins("LSTM", I, H, L, proj_size=P)
    x_shape, h_shape, c_shape = (T, B, I), (L, B, P), (L, B, H)
    cases = [
        (_bad(x_shape, 1), h_shape, c_shape),
        (x_shape, _bad(h_shape, 1), _bad(c_shape, 1)),
        (_bad(x_shape, 2), h_shape, c_shape),
        (x_shape, _bad(h_shape, 2), _bad(c_shape, 2)),
        (x_shape, _bad(h_shape, 0), _bad(c_shape, 0)),
        (x_shape, _bad(h_shape, 0, H), c_shape),  # h with hidden_size where proj_size belongs
        (x_shape, _bad(h_shape, 0), c_shape),
        (x_shape, h_shape, _bad(c_shape, 0)),
    ]
    for xs, hs, cs in cases:
        _raises_runtime_error_in_both(
            ours, ref, torch.randn(xs), (torch.randn(hs), torch.randn(cs))
        )


# ----------------------------------------------------------------------- initial state
@pytest.mark.parametrize(
    ("mode", "kw"),
    [("RNN", {}), ("GRU", {}), ("LSTM", {}), ("LSTM", {"proj_size": 3, "bidirectional": True})],
    ids=["RNN", "GRU", "LSTM", "LSTM-proj-bidirectional"],
)
def test_initial_hidden_state(mode, kw):
    """No state equals a zero state, and both equal torch.nn's."""
    torch.manual_seed(0)
    ours, ref = _twins(mode, 6, 5, 2, dtype=F64, **kw)
    D = 2 if kw.get("bidirectional") else 1
    x = torch.randn(7, 4, 6, dtype=F64)
    h = torch.zeros(2 * D, 4, kw.get("proj_size", 5), dtype=F64)
    zeros = (h, torch.zeros(2 * D, 4, 5, dtype=F64)) if mode == "LSTM" else h
    out1, final1 = ours(x, zeros)
    out2, final2 = ours(x)
    r_out, r_final = ref(x)
    torch.testing.assert_close(out1, out2, rtol=0, atol=0)

    def parts(final):
        return tuple(final) if mode == "LSTM" else (final,)

    torch.testing.assert_close(parts(final1), parts(final2), rtol=0, atol=0)
    torch.testing.assert_close(out2, r_out)
    torch.testing.assert_close(parts(final2), parts(r_final))


# --------------------------------------------------------------------- variable sequence
def _pad(t: torch.Tensor, length: int) -> torch.Tensor:
    return torch.cat([t, t.new_zeros(length - t.shape[0], *t.shape[1:])])


@pytest.mark.parametrize("proj_size", [0, 2])
@pytest.mark.parametrize("default_hidden", [True, False])
@pytest.mark.parametrize(
    ("enforce_sorted", "lengths"),
    [
        (True, [5]),
        (False, [5]),
        (True, [10, 10, 6, 2, 2, 1, 1]),
        (False, [10, 10, 6, 2, 2, 1, 1]),
        (False, [2, 1, 3, 2, 10, 5, 3]),
    ],
)
def test_variable_sequence(enforce_sorted, lengths, default_hidden, proj_size):
    """A packed batch (sorted or not) through seqlab's 2-layer bidirectional LSTM equals
    torch.nn's LSTM (same weights) run on each sequence alone: outputs, final states,
    the input's and every parameter's gradient."""
    torch.manual_seed(1)
    I, H, L, B, T = 3, 4, 2, len(lengths), max(lengths)  # noqa: E741
    ours, ref = _twins("LSTM", I, H, L, bidirectional=True, proj_size=proj_size, dtype=F64)
    x = torch.randn(T, B, I, dtype=F64)
    h0 = None
    if not default_hidden:
        h0 = (torch.randn(2 * L, B, proj_size or H, dtype=F64), torch.randn(2 * L, B, H, dtype=F64))
    # oracle: torch.nn on each sequence alone
    x_ref = x.clone().requires_grad_()
    outs, finals = [], []
    for b, n in enumerate(lengths):
        state = None if h0 is None else tuple(s[:, b : b + 1] for s in h0)
        out, final = ref(x_ref[:n, b : b + 1], state)
        outs.append(_pad(out, T))
        finals.append(final)
    r_out = torch.cat(outs, 1)
    r_final = tuple(torch.cat(parts, 1) for parts in zip(*finals, strict=True))
    # seqlab on the packed batch
    x_ours = x.clone().requires_grad_()
    packed = pack_padded_sequence(x_ours, lengths, enforce_sorted=enforce_sorted)
    p_out, p_final = ours(packed, h0)
    out, out_lengths = pad_packed_sequence(p_out)
    assert out_lengths.tolist() == lengths
    torch.testing.assert_close(out, r_out)
    torch.testing.assert_close(tuple(p_final), r_final)
    r_grads = torch.autograd.grad(r_out.sum(), [x_ref, *ref.parameters()])
    o_grads = torch.autograd.grad(out.sum(), [x_ours, *ours.parameters()])
    for a, b in zip(o_grads, r_grads, strict=True):
        torch.testing.assert_close(a, b)


# ----------------------------------------------------------------------------- dropout
@pytest.mark.parametrize("p", [0, 0.276, 0.731, 1])
@pytest.mark.parametrize("train", [True, False])
def test_dropout_known_values(p, train):
    """All-ones weights, relu, input ones (I = 10), H = 1000: layer 1 gives 10 per unit;
    layer 2 sums its 1000 inputs after dropout, so its output is 10 · kept / (1 − p):
    10000 without dropout (p = 0 or eval), 0 for p = 1, else a multiple of 10 / (1 − p)."""
    rnn, ref = _twins("RNN", 10, 1000, 2, bias=False, dropout=p, nonlinearity="relu", dtype=F64)
    for m in (rnn, ref):
        m.train(train)
        with torch.no_grad():
            for name in ("weight_ih_l0", "weight_hh_l0", "weight_ih_l1", "weight_hh_l1"):
                getattr(m, name).fill_(1)
    x, h0 = torch.ones(1, 1, 10, dtype=F64), torch.zeros(2, 1, 1000, dtype=F64)
    torch.manual_seed(2)
    out, hy = rnn(x, h0)
    torch.manual_seed(2)  # torch.nn draws the same mask from the same seed
    r_out, r_hy = ref(x, h0)
    torch.testing.assert_close(out, r_out, rtol=0, atol=0)
    torch.testing.assert_close(hy, r_hy, rtol=0, atol=0)
    assert out.min() == out.max()
    value = out[0, 0, 0].item()
    if p == 0 or not train:
        assert value == 10000
    elif p == 1:
        assert value == 0
    else:
        assert 8000 < value < 12000 and value != 10000  # dropout ran (a fixed seed)
        kept = value * (1 - p) / 10  # the number of layer-1 units dropout kept
        assert abs(kept - round(kept)) < 1e-6
    assert hy[0].min() == hy[0].max() == 10
    assert hy[1].min() == hy[1].max() == value


@pytest.mark.parametrize("p", [0, 0.1234])
@pytest.mark.parametrize("train", [True, False])
def test_dropout_state_and_flatten_parameters(p, train):
    """Two calls agree exactly unless dropout is active; a pickled and reloaded copy
    (then ``flatten_parameters()``) gives the same result under the same rule."""
    torch.manual_seed(3)
    rnn = seqlab.RNN(100, 100, 2, bias=False, dropout=p, nonlinearity="relu").train(train)
    x, hx = torch.rand(1, 1, 100), torch.rand(2, 1, 100)
    out1, hy1 = rnn(x, hx)
    out2, hy2 = rnn(x, hx)
    buf = io.BytesIO()
    torch.save(rnn, buf)
    buf.seek(0)
    rnn2 = torch.load(buf, weights_only=False)
    assert rnn2.flatten_parameters() is None
    out3, hy3 = rnn2(x, hx)
    if p == 0 or not train:
        for a, b in ((out1, out2), (out1, out3), (hy1, hy2), (hy1, hy3)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    else:
        for a, b in ((out1, out2), (out1, out3), (hy1, hy2), (hy1, hy3)):
            assert not torch.equal(a, b)


@pytest.mark.parametrize("train", [True, False])
def test_change_dropout(train):
    """``rnn.dropout = p`` after construction takes effect at the next call: outputs are
    deterministic for p in {0, 1} or in eval mode, random otherwise, and change with p
    only while training."""
    torch.manual_seed(4)
    rnn = seqlab.RNN(100, 100, 2, dropout=0, nonlinearity="relu", dtype=F64).train(train)
    x = torch.rand(3, 2, 100, dtype=F64)
    prev = None
    for p in (0, 0.5, 0, 0.7, 0.2, 1, 0.2, 0):
        rnn.dropout = p
        out1, hy1 = rnn(x)
        out2, hy2 = rnn(x)
        if p in (0, 1) or not train:
            torch.testing.assert_close(out1, out2, rtol=0, atol=0)
            torch.testing.assert_close(hy1, hy2, rtol=0, atol=0)
        else:
            assert not torch.equal(out1, out2) and not torch.equal(hy1, hy2)
        if prev is not None:
            if train:
                assert not torch.equal(out1, prev) and not torch.equal(out2, prev)
            else:
                torch.testing.assert_close(out1, prev, rtol=0, atol=0)
        prev = out1
    if train:  # the last p = 0 equals torch.nn with the same weights
        ref = nn.RNN(100, 100, 2, nonlinearity="relu", dtype=F64).train()
        ref.load_state_dict(rnn.state_dict())
        torch.testing.assert_close(prev, ref(x)[0])


# ------------------------------------------------------------------- gradients, sizes
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bias", [True, False])
def test_grad_and_gradgrad(mode, bias):
    """gradcheck and gradgradcheck of every output (outputs and final state parts) with
    respect to the input, float64, on the default backend."""
    torch.manual_seed(5)
    mod = getattr(seqlab, mode)(4, 4, bias=bias, dtype=F64)
    x = torch.rand(1, 3, 4, dtype=F64, requires_grad=True)

    def flat(x):
        out, final = mod(x)
        return (out, *(final if mode == "LSTM" else (final,)))

    assert torch.autograd.gradcheck(flat, (x,))
    assert torch.autograd.gradgradcheck(flat, (x,))


@pytest.mark.parametrize("mode", MODES)
def test_input_size_zero(mode):
    """A batch of 0 rows: output (T, 0, H), torch.nn's shapes, and backward runs."""
    ours, ref = _twins(mode, 3, 4)
    x = torch.zeros(5, 0, 3, requires_grad=True)
    out, final = ours(x)
    r_out, r_final = ref(torch.zeros(5, 0, 3))
    assert out.shape == r_out.shape == (5, 0, 4)
    for a, b in zip(final if mode == "LSTM" else (final,),
                    r_final if mode == "LSTM" else (r_final,), strict=True):  # fmt: skip
        assert a.shape == b.shape
    out.sum().backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_error_seq_len_zero(mode, bidirectional):
    ours, ref = _twins(mode, 5, 6, bidirectional=bidirectional)
    for module in (ref, ours):
        with pytest.raises(RuntimeError, match="(?i)expected sequence length to be larger than 0"):
            module(torch.ones(0, 10, 5))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_retain_variables(mode, dtype):
    """Backward through one graph several times (retain_graph) gives the same gradients,
    equal to torch.nn's."""
    torch.manual_seed(6)
    ours, ref = _twins(mode, 10, 20, num_layers=2, dtype=dtype)
    x = torch.randn(5, 6, 10, dtype=dtype, requires_grad=True)
    out = ours(x)[0]
    first = torch.autograd.grad(out.sum(), [x, *ours.parameters()], retain_graph=True)
    for _ in range(4):
        again = torch.autograd.grad(out.sum(), [x, *ours.parameters()], retain_graph=True)
        for a, b in zip(again, first, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    x_ref = x.detach().clone().requires_grad_()
    r_grads = torch.autograd.grad(ref(x_ref)[0].sum(), [x_ref, *ref.parameters()])
    for a, b in zip(first, r_grads, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    ("kw", "name", "count"), [({}, "weight_ih_l0", 4), ({"proj_size": 16}, "weight_hr_l0", 5)]
)
def test_weight_norm_flat_weights(kw, name, count):
    """weight_norm turns one flat weight into a computed tensor and remove_weight_norm
    back into a Parameter, as for torch.nn; outputs equal torch.nn's throughout."""
    torch.manual_seed(7)
    ours, ref = _twins("LSTM", 32, 32, **kw)
    x = torch.randn(3, 2, 32)

    def params_in_flat(m):
        return sum(isinstance(p, nn.Parameter) for p in m._flat_weights)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the old weight_norm's deprecation warning
        for m in (ours, ref):
            assert params_in_flat(m) == count
        ours, ref = nn.utils.weight_norm(ours, name=name), nn.utils.weight_norm(ref, name=name)
        assert params_in_flat(ours) == params_in_flat(ref) == count - 1
        torch.testing.assert_close(ours(x)[0], ref(x)[0])
        ours = nn.utils.remove_weight_norm(ours, name=name)
        ref = nn.utils.remove_weight_norm(ref, name=name)
        assert params_in_flat(ours) == params_in_flat(ref) == count
        torch.testing.assert_close(ours(x)[0], ref(x)[0])


def test_nonlinearity():
    assert seqlab.RNN(1, 10).nonlinearity == nn.RNN(1, 10).nonlinearity == "tanh"
    assert seqlab.RNN(1, 10, nonlinearity="relu").nonlinearity == "relu"
    assert seqlab.RNN(2, 3, 1, "relu").nonlinearity == nn.RNN(2, 3, 1, "relu").nonlinearity
    for cls in (nn.RNN, seqlab.RNN):
        with pytest.raises(ValueError, match="garbage"):
            cls(1, 10, nonlinearity="garbage")
    # relu really runs: equal to torch.nn with the same weights, and unlike tanh
    ours, ref = _twins("RNN", 2, 3, 1, "relu", dtype=F64)
    x = torch.randn(4, 2, 2, dtype=F64) * 3
    torch.testing.assert_close(ours(x)[0], ref(x)[0])
    assert (ours(x)[0] >= 0).all() and (ours(x)[0] == 0).any()


def test_deepcopy_keeps_results():
    """torch's tests copy layers (deepcopy) to build their twins; the copy is equal."""
    ours = seqlab.GRU(3, 4, 2)
    x = torch.randn(5, 2, 3)
    torch.testing.assert_close(deepcopy(ours)(x)[0], ours(x)[0], rtol=0, atol=0)
