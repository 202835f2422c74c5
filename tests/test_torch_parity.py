"""torch.nn constructor and error parity of the layers and cells (issue 14, item 4).

torch.nn itself is the oracle: the same arguments must be accepted or refused with the same
exception type, and give the same repr, parameter lists and results.
"""

import warnings

import pytest
import torch
from torch import nn

import seqlab
from seqlab.validation import SeqlabInputError

LAYERS = ["RNN", "LSTM", "GRU"]
CELLS = ["RNNCell", "LSTMCell", "GRUCell"]


def _outcome(make):
    """('ok', repr) or (exception type, None) of a constructor call; warnings ignored."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return "ok", repr(make())
        except Exception as err:  # noqa: BLE001 (compared below)
            return type(err), None


LAYER_ARGS = [
    ((3, 4), {}),
    ((3, 4, 2), {"bias": False, "batch_first": True, "dropout": 0.5, "bidirectional": True}),
    ((3, 4), {"dropout": 1}),
    ((3, 4, 2), {"dropout": 1.0}),
    ((3, 4), {"proj_size": 0}),
    ((3, 4), {"bias": "False"}),
    ((3, 4), {"batch_first": 0}),
    ((3, 4), {"dropout": 1.5}),
    ((3, 4), {"dropout": -0.1}),
    ((3, 4), {"dropout": True}),
    ((3, 4), {"dropout": "0.5"}),
    ((3, 4), {"dropout": float("nan")}),
    ((3, 0), {}),
    ((0, 4), {}),
    ((3, 4, 0), {}),
    ((3, -1), {}),
    ((3, 4.0), {}),
    ((3, 4), {"proj_size": -1}),
    ((3, 4), {"proj_size": 2}),
    ((3, 4, 2), {"proj_size": 3, "bidirectional": True}),
    ((3, 4), {"proj_size": 4}),
]


@pytest.mark.parametrize("mode", LAYERS)
@pytest.mark.parametrize("args,kwargs", LAYER_ARGS)
def test_layer_constructor_accepts_and_refuses_as_torch(mode, args, kwargs):
    ours = _outcome(lambda: getattr(seqlab, mode)(*args, **kwargs))
    theirs = _outcome(lambda: getattr(nn, mode)(*args, **kwargs))
    if theirs[0] == "ok":
        assert ours == theirs  # accepted by both, identical repr
    else:
        assert ours[0] != "ok", f"torch refuses with {theirs[0].__name__}, seqlab accepts"
        assert issubclass(ours[0], theirs[0]), (ours[0], theirs[0])


def test_layer_type_errors_name_the_argument():
    with pytest.raises(TypeError, match="bias: expected a bool, got str"):
        seqlab.LSTM(3, 4, bias="False")
    with pytest.raises(TypeError, match="batch_first: expected a bool, got int"):
        seqlab.GRU(3, 4, batch_first=0)
    with pytest.raises(TypeError, match="hidden_size"):
        seqlab.RNN(3, 4.0)


def test_dropout_one_is_accepted_and_warns_like_torch_with_one_layer():
    with pytest.warns(UserWarning, match="num_layers"):
        seqlab.LSTM(3, 4, dropout=1)
    with pytest.warns(UserWarning):
        nn.LSTM(3, 4, dropout=1)
    layer = seqlab.GRU(3, 4, num_layers=2, dropout=1.0).train()
    torch.manual_seed(0)
    out, _ = layer(torch.randn(5, 2, 3))
    ref = nn.GRU(3, 4, num_layers=2, dropout=1.0).train()
    ref.load_state_dict(layer.state_dict())
    ref_out, _ = ref(torch.randn(5, 2, 3))
    # p = 1 zeroes the second layer's input in both: its output no longer depends on x
    second = seqlab.GRU(4, 4)
    second.load_state_dict({k[:-1] + "0": v for k, v in layer.state_dict().items() if "l1" in k})
    expect, _ = second(torch.zeros(5, 2, 4))
    torch.testing.assert_close(out, expect)
    torch.testing.assert_close(ref_out, expect)


def test_proj_size_arguments():
    assert seqlab.LSTM(3, 4, proj_size=0).proj_size == 0
    assert seqlab.GRU(3, 4).proj_size == 0
    for cls in (seqlab.GRU, seqlab.RNN):  # torch.nn refuses the argument itself, even 0
        for proj_size in (0, 2):
            with pytest.raises(ValueError, match="proj_size"):
                cls(3, 4, proj_size=proj_size)
    with pytest.raises(ValueError, match="proj_size"):
        seqlab.LSTM(3, 4, proj_size=4)  # torch: must be smaller than hidden_size
    with pytest.raises(ValueError):
        nn.LSTM(3, 4, proj_size=4)


@pytest.mark.parametrize("mode", LAYERS)
@pytest.mark.parametrize("bias", [True, False])
def test_flat_weights_and_all_weights_follow_torch(mode, bias):
    ours = getattr(seqlab, mode)(3, 4, num_layers=2, bias=bias, bidirectional=True)
    ref = getattr(nn, mode)(3, 4, num_layers=2, bias=bias, bidirectional=True)
    ref.load_state_dict(ours.state_dict())
    assert ours._flat_weights_names == ref._flat_weights_names
    assert ours._all_weights == ref._all_weights
    assert len(ours._flat_weights) == len(ref._flat_weights)
    for a, b in zip(ours._flat_weights, ref._flat_weights, strict=True):
        assert torch.equal(a, b)
    assert [[tuple(p.shape) for p in g] for g in ours.all_weights] == [
        [tuple(p.shape) for p in g] for g in ref.all_weights
    ]
    assert ours.all_weights[1][0] is ours.weight_ih_l0_reverse  # views, not copies
    assert ours.flatten_parameters() is None and ref.flatten_parameters() is None


@pytest.mark.parametrize("mode", LAYERS)
def test_device_and_dtype_factory_arguments(mode):
    ours = getattr(seqlab, mode)(3, 4, 2, device="cpu", dtype=torch.float64)
    ref = getattr(nn, mode)(3, 4, 2, device="cpu", dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in ours.parameters())
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(ours(x)[0], ref(x)[0])


@pytest.mark.parametrize("mode", CELLS)
def test_cell_factory_arguments_and_repr(mode):
    for kwargs in ({}, {"bias": False}):
        ours = getattr(seqlab, mode)(3, 4, dtype=torch.float64, **kwargs)
        ref = getattr(nn, mode)(3, 4, dtype=torch.float64, **kwargs)
        assert repr(ours) == repr(ref)
        assert all(p.dtype == torch.float64 for p in ours.parameters())
    assert repr(seqlab.RNNCell(3, 4, nonlinearity="relu")) == repr(
        nn.RNNCell(3, 4, nonlinearity="relu")
    )


def test_seqlab_only_options_follow_torch_repr():
    assert repr(seqlab.GRU(3, 4, reset_after=False)) == "GRU(3, 4, reset_after=False)"
    assert repr(seqlab.GRUCell(3, 4, reset_after=False)) == "GRUCell(3, 4, reset_after=False)"
    assert repr(seqlab.LSTM(3, 4, backend="reference")) == "LSTM(3, 4, backend='reference')"


def test_cell_refuses_a_non_bool_bias():
    # torch.nn's cells take bias="False" as True (a non-empty string); seqlab refuses it
    with pytest.raises(TypeError, match="bias"):
        seqlab.LSTMCell(3, 4, bias="False")


# ------------------------------------------------------------ exception classes


def _both(make, call):
    """Call ``call`` on seqlab's and torch's modules; return both exceptions."""
    errs = []
    for lib in (seqlab, nn):
        with pytest.raises(Exception) as err:  # noqa: PT011 (compared below)
            call(make(lib))
        errs.append(err.value)
    return errs


@pytest.mark.parametrize(
    "make,call",
    [
        (lambda lib: lib.LSTM(3, 4), lambda m: m(torch.zeros(5, 2, 4))),  # features
        (lambda lib: lib.GRU(3, 4), lambda m: m(torch.zeros(5, 2, 3), torch.zeros(1, 3, 4))),
        (lambda lib: lib.RNN(3, 4), lambda m: m(torch.zeros(0, 2, 3))),  # T = 0
        (lambda lib: lib.LSTMCell(3, 4), lambda m: m(torch.zeros(2, 4))),
        (
            lambda lib: lib.LSTMCell(3, 4),
            lambda m: m(torch.zeros(2, 3), (torch.zeros(3, 4), torch.zeros(3, 4))),
        ),
    ],
)
def test_errors_are_caught_by_torch_users_except_clauses(make, call):
    ours, theirs = _both(make, call)
    assert isinstance(ours, SeqlabInputError)
    assert isinstance(ours, type(theirs)), (type(ours), type(theirs))
    assert isinstance(ours, ValueError)  # seqlab's documented class still catches it


def test_bad_lengths_are_both_value_and_runtime_errors():
    layer = seqlab.LSTM(3, 4)
    for lengths in (torch.tensor([1, 9]), torch.tensor([1, 2, 3])):
        with pytest.raises(RuntimeError, match="lengths"):
            layer(torch.zeros(5, 2, 3), lengths=lengths)
        with pytest.raises(ValueError, match="lengths"):
            layer(torch.zeros(5, 2, 3), lengths=lengths)


@pytest.mark.parametrize(
    "lengths,error",
    [
        (torch.tensor([2.9, 1.0]), TypeError),  # would be truncated to 2
        (torch.tensor([True, True]), TypeError),  # would read as 1, 1
        (torch.tensor([-1, 2]), ValueError),
        (torch.tensor([1, 4]), ValueError),  # > T
    ],
)
@pytest.mark.parametrize("backend", ["reference", "fused", None])
def test_run_layer_refuses_bad_lengths(lengths, error, backend):
    gen = torch.Generator().manual_seed(0)
    w_ih, w_hh = torch.randn(9, 2, generator=gen), torch.randn(9, 3, generator=gen)
    with pytest.raises(error, match="lengths"):
        seqlab.engine.run_layer(
            "gru",
            torch.zeros(3, 2, 2),
            (torch.zeros(2, 3),),
            w_ih,
            w_hh,
            None,
            None,
            lengths,
            backend=backend,
        )


# ------------------------------------------------------------ packed sequences


@pytest.mark.parametrize("enforce_sorted", [True, False])
def test_packed_output_keeps_the_inputs_sorted_indices(enforce_sorted):
    torch.manual_seed(0)
    ours, ref = seqlab.GRU(3, 4), nn.GRU(3, 4)
    ref.load_state_dict(ours.state_dict())
    lengths = [5, 3, 2] if enforce_sorted else [2, 5, 3]
    x = nn.utils.rnn.pack_padded_sequence(
        torch.randn(5, 3, 3), lengths, enforce_sorted=enforce_sorted
    )
    (out, h), (r_out, r_h) = ours(x), ref(x)
    assert (out.sorted_indices is None) == (r_out.sorted_indices is None) == enforce_sorted
    if not enforce_sorted:
        assert torch.equal(out.sorted_indices, r_out.sorted_indices)
        assert torch.equal(out.unsorted_indices, r_out.unsorted_indices)
    assert torch.equal(out.batch_sizes, r_out.batch_sizes)
    torch.testing.assert_close(out.data, r_out.data)
    torch.testing.assert_close(h, r_h)


# ------------------------------------------------------------ proj_size (LSTMP)


def _proj_pair(L, bidirectional, batch_first=False, bias=True):
    ours = seqlab.LSTM(
        3,
        5,
        L,
        bias=bias,
        batch_first=batch_first,
        bidirectional=bidirectional,
        proj_size=2,
        dtype=torch.float64,
    )
    ref = nn.LSTM(
        3,
        5,
        L,
        bias=bias,
        batch_first=batch_first,
        bidirectional=bidirectional,
        proj_size=2,
        dtype=torch.float64,
    )
    assert list(ours.state_dict()) == list(ref.state_dict())
    ref.load_state_dict(ours.state_dict())
    return ours, ref


@pytest.mark.parametrize("L", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_proj_size_matches_torch_outputs_states_and_gradients(L, bidirectional, bias):
    torch.manual_seed(1)
    ours, ref = _proj_pair(L, bidirectional, bias=bias)
    assert repr(ours) == repr(ref)
    assert ours._flat_weights_names == ref._flat_weights_names
    D = 2 if bidirectional else 1
    x = torch.randn(4, 3, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(L * D, 3, 2, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(L * D, 3, 5, dtype=torch.float64, requires_grad=True)
    out, (h, c) = ours(x, (h0, c0))
    r_out, (r_h, r_c) = ref(x, (h0, c0))
    assert out.shape == (4, 3, 2 * D)
    torch.testing.assert_close(out, r_out)
    torch.testing.assert_close(h, r_h)
    torch.testing.assert_close(c, r_c)
    loss = out.square().sum() + h.sum() + c.sum()
    r_loss = r_out.square().sum() + r_h.sum() + r_c.sum()
    ins = [x, h0, c0]
    grads = torch.autograd.grad(loss, ins + list(ours.parameters()))
    r_grads = torch.autograd.grad(r_loss, ins + list(ref.parameters()))
    for a, b in zip(grads, r_grads, strict=True):
        torch.testing.assert_close(a, b)


def test_proj_size_with_lengths_matches_packed_torch():
    torch.manual_seed(2)
    ours, ref = _proj_pair(2, True, batch_first=True)
    x = torch.randn(3, 5, 3, dtype=torch.float64)
    lengths = torch.tensor([2, 5, 3])
    out, (h, c) = ours(x, lengths=lengths)
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    r_out, (r_h, r_c) = ref(packed)
    r_out, _ = nn.utils.rnn.pad_packed_sequence(r_out, batch_first=True, total_length=5)
    torch.testing.assert_close(out, r_out)
    torch.testing.assert_close(h, r_h)
    torch.testing.assert_close(c, r_c)


def test_proj_size_state_shapes_are_checked_by_name():
    ours = seqlab.LSTM(3, 5, proj_size=2)
    x = torch.randn(4, 3, 3)
    with pytest.raises(ValueError, match="state.h0"):
        ours(x, (torch.zeros(1, 3, 5), torch.zeros(1, 3, 5)))
    with pytest.raises(ValueError, match="state.c0"):
        ours(x, (torch.zeros(1, 3, 2), torch.zeros(1, 3, 2)))


def test_proj_size_gradgradcheck():
    torch.manual_seed(3)
    ours = seqlab.LSTM(2, 3, proj_size=1, dtype=torch.float64)
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda x: ours(x)[0], (x,))


# ------------------------------------------------------------ cells: zero sizes, unbatched


def _cell_pair(mode, I, H):  # noqa: E741
    ours = getattr(seqlab, mode)(I, H, dtype=torch.float64)
    ref = getattr(nn, mode)(I, H, dtype=torch.float64)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def _parts(result):
    return tuple(result) if isinstance(result, tuple) else (result,)


@pytest.mark.parametrize("mode", CELLS)
@pytest.mark.parametrize("I,H", [(0, 3), (3, 0), (0, 0)])
def test_cells_take_zero_sizes_as_torch(mode, I, H):  # noqa: E741
    ours, ref = _cell_pair(mode, I, H)
    x = torch.randn(2, I, dtype=torch.float64)
    new = ours(x)
    expect = ref(x)
    assert type(new) is torch.Tensor if mode != "LSTMCell" else isinstance(new, tuple)
    assert _parts(new)[0].shape == (2, H)
    for a, b in zip(_parts(new), _parts(expect), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("mode", CELLS)
@pytest.mark.parametrize("with_state", [False, True])
def test_cells_take_unbatched_input_as_torch(mode, with_state):
    torch.manual_seed(4)
    ours, ref = _cell_pair(mode, 3, 4)
    x = torch.randn(3, dtype=torch.float64)
    state = None
    if with_state:
        h = torch.randn(4, dtype=torch.float64)
        state = (h, torch.randn(4, dtype=torch.float64)) if mode == "LSTMCell" else h
    new = ours(x, state)
    expect = _parts(ref(x, state))
    y, stepped = ours.step(x, state)  # composition's form: y is h
    torch.testing.assert_close(y, expect[0])
    assert len(_parts(new)) == len(expect)
    for a, b, c in zip(_parts(new), expect, _parts(stepped), strict=True):
        torch.testing.assert_close(c, b)
        assert a.shape == (4,)
        torch.testing.assert_close(a, b)


def test_unbatched_cell_refuses_a_batched_state_by_name():
    with pytest.raises(ValueError, match=r"state.h: expected shape \(4,\)"):
        seqlab.GRUCell(3, 4)(torch.randn(3), torch.randn(1, 4))


@pytest.mark.parametrize("size", [-1, True, 2.0])
def test_cells_refuse_negative_bool_and_float_sizes(size):
    with pytest.raises(ValueError, match="hidden_size"):
        seqlab.LSTMCell(3, size)


# ------------------------------------------------------------ torch.nn utilities on the layers


@pytest.mark.parametrize(
    "apply",
    [nn.utils.weight_norm, nn.utils.parametrizations.weight_norm],
    ids=["weight_norm", "parametrizations.weight_norm"],
)
def test_weight_norm_matches_torch(apply):
    torch.manual_seed(5)
    ours, ref = seqlab.LSTM(3, 4, 2, dtype=torch.float64), nn.LSTM(3, 4, 2, dtype=torch.float64)
    ref.load_state_dict(ours.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the old weight_norm's deprecation warning
        ours, ref = apply(ours, "weight_hh_l0"), apply(ref, "weight_hh_l0")
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    out, r_out = ours(x)[0], ref(x)[0]
    torch.testing.assert_close(out, r_out)
    grads = torch.autograd.grad(out.sum(), list(ours.parameters()))
    r_grads = torch.autograd.grad(r_out.sum(), list(ref.parameters()))
    for a, b in zip(grads, r_grads, strict=True):
        torch.testing.assert_close(a, b)


def test_changing_dropout_after_construction_takes_effect_as_in_torch():
    torch.manual_seed(6)
    ours = seqlab.GRU(3, 4, 2, dropout=0.0).train()
    x = torch.randn(5, 2, 3)
    before = ours(x)[0]
    torch.testing.assert_close(ours(x)[0], before)  # no dropout: deterministic
    ours.dropout = 1.0  # as torch.nn's test_RNN_change_dropout does
    after = ours(x)[0]
    ref = nn.GRU(3, 4, 2, dropout=1.0).train()
    ref.load_state_dict(ours.state_dict())
    torch.testing.assert_close(after, ref(x)[0])  # both: layer 2 sees zeros
    assert not torch.allclose(after, before)
