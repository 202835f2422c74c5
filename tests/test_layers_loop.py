"""Layers vs a hand-written loop over their own cell (acceptance 3), layer gradcheck (4),
lengths and PackedSequence (5), learned initial state."""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import seqlab
from helpers import assert_close, state_tensors

F64 = torch.float64
KINDS = {
    "rnn_tanh": (lambda **k: seqlab.RNN(3, 4, **k), lambda: seqlab.RNNCell(3, 4)),
    "rnn_relu": (
        lambda **k: seqlab.RNN(3, 4, nonlinearity="relu", **k),
        lambda: seqlab.RNNCell(3, 4, nonlinearity="relu"),
    ),
    "lstm": (lambda **k: seqlab.LSTM(3, 4, **k), lambda: seqlab.LSTMCell(3, 4)),
    "gru": (lambda **k: seqlab.GRU(3, 4, **k), lambda: seqlab.GRUCell(3, 4)),
    "gru_reset_before": (
        lambda **k: seqlab.GRU(3, 4, reset_after=False, **k),
        lambda: seqlab.GRUCell(3, 4, reset_after=False),
    ),
}


def cell_like(layer, make_cell, suffix="_l0"):
    cell = make_cell().double()
    cell.load_state_dict(
        {k.removesuffix(suffix): v for k, v in layer.state_dict().items() if k.endswith(suffix)}
    )
    return cell


@pytest.mark.parametrize("kind", list(KINDS))
def test_layer_equals_loop_over_its_cell(kind):
    make_layer, make_cell = KINDS[kind]
    layer = make_layer(bidirectional=True).double()
    fwd, bwd = cell_like(layer, make_cell), cell_like(layer, make_cell, "_l0_reverse")
    x = torch.randn(6, 2, 3, dtype=F64)
    out, final = layer(x)
    # hand-written loops: forward in time, then backward in time
    s = fwd.initial_state(2, dtype=F64)
    ys = []
    for t in range(6):  # torch.nn's form: the cell returns its new state, h is part 0
        s = fwd(x[t], s)
        ys.append(state_tensors(s)[0])
    s_b = bwd.initial_state(2, dtype=F64)
    ys_b = [None] * 6
    for t in reversed(range(6)):  # composition's form: step returns (y, new_state)
        ys_b[t], s_b = bwd.step(x[t], s_b)
    expected = torch.cat([torch.stack(ys), torch.stack(ys_b)], dim=-1)
    assert_close(out, expected, F64, "outputs")
    assert_close(state_tensors(final)[0][0], state_tensors(s)[0], F64, "final fwd")
    assert_close(state_tensors(final)[0][1], state_tensors(s_b)[0], F64, "final bwd")


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("with_lengths", [False, True])
def test_layer_gradcheck(kind, with_lengths):
    make_layer, _ = KINDS[kind]
    layer = make_layer(num_layers=2, bidirectional=True).double()
    names = [n for n, _ in layer.named_parameters()]
    lengths = torch.tensor([3, 1]) if with_lengths else None
    x = torch.randn(3, 2, 3, dtype=F64, requires_grad=True)
    n_state = 2 if kind == "lstm" else 1
    s0 = [torch.randn(4, 2, 4, dtype=F64, requires_grad=True) for _ in range(n_state)]

    def f(x, *rest):
        states, ps = rest[:n_state], rest[n_state:]
        state = tuple(states) if n_state == 2 else states[0]
        out, final = torch.func.functional_call(
            layer, dict(zip(names, ps, strict=True)), (x, state), {"lengths": lengths}
        )
        return (out, *state_tensors(final))

    assert torch.autograd.gradcheck(f, (x, *s0, *layer.parameters()), fast_mode=True)


def run_rows_alone(layer, x, lengths):
    outs, finals = [], []
    for b, n in enumerate(lengths.tolist()):
        out, final = layer(x[:n, b : b + 1])
        outs.append(out)
        finals.append(state_tensors(final))
    return outs, finals


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("bidirectional", [False, True])
def test_lengths_equal_unpadded_rows(kind, bidirectional):
    make_layer, _ = KINDS[kind]
    layer = make_layer(num_layers=2, bidirectional=bidirectional).double()
    lengths = torch.tensor([5, 2, 7, 1])
    x = torch.randn(7, 4, 3, dtype=F64)
    out, final = layer(x, lengths=lengths)
    outs, finals = run_rows_alone(layer, x, lengths)
    for b, n in enumerate(lengths.tolist()):
        assert_close(out[:n, b : b + 1], outs[b], F64, f"row {b} outputs")
        assert torch.count_nonzero(out[n:, b]) == 0, "padded outputs must be exactly zero"
        for got, want in zip(state_tensors(final), finals[b], strict=True):
            assert_close(got[:, b : b + 1], want, F64, f"row {b} final state")


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_packed_sequence_equals_lengths(kind, batch_first):
    make_layer, _ = KINDS[kind]
    layer = make_layer(bidirectional=True, batch_first=batch_first).double()
    lengths = torch.tensor([2, 5, 3])
    x = torch.randn((3, 5, 3) if batch_first else (5, 3, 3), dtype=F64)
    out, final = layer(x, lengths=lengths)
    packed = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)
    p_out, p_final = layer(packed)
    unpacked, p_lengths = pad_packed_sequence(p_out, batch_first=batch_first, total_length=5)
    assert torch.equal(p_lengths, lengths)
    assert_close(unpacked, out, F64, "outputs")
    for a, b in zip(state_tensors(p_final), state_tensors(final), strict=True):
        assert_close(a, b, F64, "final state")


def test_learned_initial_state_is_trained_and_used():
    layer = seqlab.LSTM(3, 4, num_layers=2, learn_initial_state=True).double()
    with torch.no_grad():
        layer.initial_state_param.normal_()
    x = torch.randn(5, 2, 3, dtype=F64)
    out, _ = layer(x)
    h0 = layer.initial_state_param[0].expand(2, 2, 4)
    c0 = layer.initial_state_param[1].expand(2, 2, 4)
    explicit, _ = layer(x, (h0, c0))
    assert_close(out, explicit, F64, "learned state == explicit state")
    out.sum().backward()
    assert layer.initial_state_param.grad.abs().sum() > 0
    assert "initial_state_param" not in seqlab.LSTM(3, 4).state_dict()


def test_dropout_between_layers_only_in_training():
    layer = seqlab.GRU(3, 8, num_layers=3, dropout=0.5).double()
    x = torch.randn(4, 2, 3, dtype=F64)
    layer.eval()
    a, _ = layer(x)
    b, _ = layer(x)
    assert torch.equal(a, b)
    layer.train()
    c, _ = layer(x)
    assert not torch.allclose(a, c)
