"""PyTorch's own ``module_db`` samples of the six recurrent classes through torch.nn and seqlab.

Every sample input of ``torch.testing._internal.common_modules.module_db`` for nn.RNN, nn.GRU,
nn.LSTM (RNN and GRU also with their packed-sequence variants), nn.RNNCell, nn.GRUCell and
nn.LSTMCell is built on CPU in float64 with torch.nn's constructor arguments, the torch.nn
module's ``state_dict`` is loaded into seqlab's twin, and both run the same inputs: outputs,
final states, the gradients of a random projection of all outputs with respect to every
input tensor and every parameter must be equal (``torch.testing.assert_close``). The
``module_error_inputs_func`` samples must be rejected by both (seqlab may raise another
exception class). gradcheck and gradgradcheck run on a few small samples per class.

Cells are called as torch's, and their raw returns compared: ``h`` (a Tensor) or ``(h, c)``
(a tuple) from both. The one deliberate difference these samples meet is ``CELL_BIAS``,
listed in README. Nothing is skipped: module_db's own skips
for these classes are CUDA-only (``rnn_gru_lstm_module_info_decorators``) and MPS-only.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

# needs expecttest (pinned in the dev extra); no importorskip: a missing one must fail loudly
from torch.testing._internal.common_modules import ModuleErrorEnum, module_db

import seqlab

DTYPE = torch.float64
PAIRS = {  # torch.nn class -> seqlab class
    nn.RNN: seqlab.RNN,
    nn.GRU: seqlab.GRU,
    nn.LSTM: seqlab.LSTM,
    nn.RNNCell: seqlab.RNNCell,
    nn.GRUCell: seqlab.GRUCell,
    nn.LSTMCell: seqlab.LSTMCell,
}
CELLS = (nn.RNNCell, nn.GRUCell, nn.LSTMCell)
INFOS = {info.module_cls: info for info in module_db if info.module_cls in PAIRS}

# Deliberate differences from torch.nn met by these samples (also listed in README).
CELL_BIAS = (
    "seqlab's cells reject a non-bool bias at construction (TypeError); torch.nn's cells take "
    "any value, e.g. module_db's RNNCell(10, 20, 'relu') sets bias='relu'"
)


def _samples(cls: type, seed: int = 0) -> list:
    """module_db's forward samples for ``cls`` (RNN/GRU with the packed-sequence variants)."""
    info = INFOS[cls]
    torch.manual_seed(seed)
    kw = {"with_packed_sequence": True} if cls in (nn.RNN, nn.GRU) else {}
    return info.module_inputs_func(
        info, device="cpu", dtype=DTYPE, requires_grad=True, training=True, **kw
    )


def _error_samples(cls: type) -> list:
    info = INFOS[cls]
    torch.manual_seed(0)
    return info.module_error_inputs_func(
        info, device="cpu", dtype=DTYPE, requires_grad=True, training=True
    )


COUNTS = {cls: len(_samples(cls)) for cls in PAIRS}
ERROR_COUNTS = {cls: len(_error_samples(cls)) for cls in PAIRS}
CASES = [
    pytest.param(cls, i, id=f"{cls.__name__}-{i}") for cls in PAIRS for i in range(COUNTS[cls])
]
ERROR_CASES = [
    pytest.param(cls, i, id=f"{cls.__name__}-err{i}")
    for cls in PAIRS
    for i in range(ERROR_COUNTS[cls])
]


def _copy(obj):
    """A fresh leaf copy of every tensor in ``obj`` (PackedSequence, tuples), same values."""
    if isinstance(obj, PackedSequence):
        return PackedSequence(
            _copy(obj.data), obj.batch_sizes, obj.sorted_indices, obj.unsorted_indices
        )
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone().requires_grad_(obj.requires_grad)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_copy(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _copy(v) for k, v in obj.items()}
    return obj


def _leaves(obj) -> list[torch.Tensor]:
    """The tensors requiring grad in ``obj``, in a fixed order."""
    if isinstance(obj, PackedSequence):
        return _leaves(obj.data)
    if isinstance(obj, torch.Tensor):
        return [obj] if obj.requires_grad else []
    if isinstance(obj, (tuple, list)):
        return [t for o in obj for t in _leaves(o)]
    if isinstance(obj, dict):
        return [t for k in sorted(obj) for t in _leaves(obj[k])]
    return []


def _flat(obj) -> list:
    """Every tensor (and PackedSequence index tensor, None kept) of an output, in order."""
    if isinstance(obj, PackedSequence):
        return [obj.data, obj.batch_sizes, obj.sorted_indices, obj.unsorted_indices]
    if isinstance(obj, (tuple, list)):
        return [t for o in obj for t in _flat(o)]
    return [obj]


def _build(cls: type, constructor_input) -> tuple[nn.Module, nn.Module]:
    """torch.nn's module and seqlab's twin with its weights, both float64."""
    args, kwargs = constructor_input.args, constructor_input.kwargs
    ref = cls(*args, **kwargs).to(DTYPE)
    ours = PAIRS[cls](*args, **kwargs).to(DTYPE)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


@pytest.mark.parametrize(("cls", "index"), CASES)
def test_forward_backward_equal_torch(cls: type, index: int) -> None:
    """Outputs, states and the gradients of every input and parameter equal torch.nn's."""
    _compare(cls, _samples(cls)[index])


@pytest.mark.parametrize(("cls", "index"), CASES)
def test_non_contiguous_inputs_eval_mode_equal_torch(cls: type, index: int) -> None:
    """As above with every input tensor a strided view (torch's test_non_contiguous_tensors)
    and both modules in eval mode (module_db marks these classes train_and_eval_differ)."""
    _compare(cls, _samples(cls)[index], non_contiguous=True, train=False)


def _strided(obj):
    """``obj`` with each tensor replaced by an equal non-contiguous leaf view (every other
    element of a doubled last dimension), as torch's test_non_contiguous_tensors does."""
    if isinstance(obj, PackedSequence):
        data = _strided(obj.data)
        return PackedSequence(data, obj.batch_sizes, obj.sorted_indices, obj.unsorted_indices)
    if isinstance(obj, torch.Tensor):
        wide = torch.repeat_interleave(obj.detach(), 2, dim=-1)[..., ::2]
        assert not wide.is_contiguous() and torch.equal(wide, obj)
        return wide.requires_grad_(obj.requires_grad)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_strided(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _strided(v) for k, v in obj.items()}
    return obj


def _compare(cls: type, sample, *, non_contiguous: bool = False, train: bool = True) -> None:
    ref, ours = _build(cls, sample.constructor_input)
    ref.train(train)
    ours.train(train)
    fi = sample.forward_input
    prep = _strided if non_contiguous else _copy
    r_args, r_kwargs = prep(fi.args), prep(fi.kwargs)
    o_args, o_kwargs = prep(fi.args), prep(fi.kwargs)

    r_raw, o_raw = ref(*r_args, **r_kwargs), ours(*o_args, **o_kwargs)
    # the same structure: a Tensor where torch.nn returns one, else a tuple of the same length
    assert isinstance(o_raw, torch.Tensor) == isinstance(r_raw, torch.Tensor), (r_raw, o_raw)
    if isinstance(r_raw, tuple):
        assert isinstance(o_raw, tuple) and len(o_raw) == len(r_raw)
    r_out, o_out = _flat(r_raw), _flat(o_raw)
    assert len(r_out) == len(o_out)
    for r, o in zip(r_out, o_out, strict=True):
        if r is None or o is None:
            assert r is None and o is None, (r, o)
        else:
            torch.testing.assert_close(o, r)

    # gradients of a random projection of every float output
    gen = torch.Generator().manual_seed(1)
    weights = [torch.randn(r.shape, generator=gen, dtype=DTYPE) for r in r_out if _is_float(r)]
    r_loss = sum((w * r).sum() for w, r in zip(weights, filter(_is_float, r_out), strict=True))
    o_loss = sum((w * o).sum() for w, o in zip(weights, filter(_is_float, o_out), strict=True))
    r_in, o_in = _leaves((r_args, r_kwargs)), _leaves((o_args, o_kwargs))
    r_names, r_params = zip(*ref.named_parameters(), strict=True)
    o_params = [dict(ours.named_parameters())[n] for n in r_names]
    r_grads = torch.autograd.grad(r_loss, [*r_in, *r_params], allow_unused=True)
    o_grads = torch.autograd.grad(o_loss, [*o_in, *o_params], allow_unused=True)
    names = [f"input{k}" for k in range(len(r_in))] + list(r_names)
    for name, rg, og in zip(names, r_grads, o_grads, strict=True):
        rg = torch.zeros(()) if rg is None else rg
        og = torch.zeros(()) if og is None else og
        torch.testing.assert_close(og, rg.expand_as(og) if rg.dim() == 0 else rg, msg=name)


def _is_float(t) -> bool:
    return isinstance(t, torch.Tensor) and t.is_floating_point()


def _seqlab_error(cls: type, err) -> BaseException:
    """Check torch.nn raises ``err`` as module_db states; return what seqlab raises on it."""
    sample = err.module_error_input
    args, kwargs = sample.constructor_input.args, sample.constructor_input.kwargs
    if err.error_on == ModuleErrorEnum.CONSTRUCTION_ERROR:
        with pytest.raises(err.error_type, match=err.error_regex):
            cls(*args, **kwargs)
        with pytest.raises(Exception) as caught:  # noqa: B017 - any class; compared below
            PAIRS[cls](*args, **kwargs)
        return caught.value
    assert err.error_on == ModuleErrorEnum.FORWARD_ERROR
    ref = cls(*args, **kwargs)
    if cls in CELLS and len(args) > 2 and not isinstance(args[2], bool):
        # CELL_BIAS: seqlab rejects the constructor already; check that, then the forward
        # error with the bool torch.nn made of it, so the sample's own check still runs
        with pytest.raises(TypeError, match="bias"):
            PAIRS[cls](*args, **kwargs)
        args = (*args[:2], bool(args[2]), *args[3:])
    ours = PAIRS[cls](*args, **kwargs)
    ours.load_state_dict(ref.state_dict())
    fi = sample.forward_input
    with pytest.raises(err.error_type, match=err.error_regex):
        ref(*_copy(fi.args), **_copy(fi.kwargs))
    with pytest.raises(Exception) as caught:  # noqa: B017
        ours(*_copy(fi.args), **_copy(fi.kwargs))
    return caught.value


@pytest.mark.parametrize(("cls", "index"), ERROR_CASES)
def test_error_inputs_rejected_by_both(cls: type, index: int) -> None:
    """Each of module_db's error inputs makes torch.nn raise as stated, and seqlab raise too."""
    _seqlab_error(cls, _error_samples(cls)[index])


def _class_case(cls: type, index: int):
    return pytest.param(cls, index, id=f"{cls.__name__}-err{index}")


@pytest.mark.parametrize(
    ("cls", "index"), [_class_case(cls, i) for cls in PAIRS for i in range(ERROR_COUNTS[cls])]
)
def test_error_inputs_same_exception_class(cls: type, index: int) -> None:
    """seqlab's exception is an instance of torch.nn's class, so ``except`` clauses written
    for torch.nn catch it (the cells' bias check raises TypeError first: CELL_BIAS)."""
    err = _error_samples(cls)[index]
    caught = _seqlab_error(cls, err)
    assert isinstance(caught, err.error_type), (type(caught), err.error_type, str(caught))


def _gradcheck_fn(cls: type, module: nn.Module, args, kwargs):
    """(function, inputs) for gradcheck: the flat float outputs as a function of the
    float input tensors and every parameter (via functional_call)."""
    names = [n for n, _ in module.named_parameters()]
    params = [p.detach().clone().requires_grad_() for _, p in module.named_parameters()]
    inputs = _leaves((args, kwargs))

    def rebuild(obj, it):
        if isinstance(obj, PackedSequence):
            return PackedSequence(
                rebuild(obj.data, it), obj.batch_sizes, obj.sorted_indices, obj.unsorted_indices
            )
        if isinstance(obj, torch.Tensor):
            return next(it) if obj.requires_grad else obj
        if isinstance(obj, (tuple, list)):
            return type(obj)(rebuild(o, it) for o in obj)
        if isinstance(obj, dict):
            return {k: rebuild(obj[k], it) for k in sorted(obj)}
        return obj

    def fn(*tensors):
        xs, ps = tensors[: len(inputs)], tensors[len(inputs) :]
        a, k = rebuild((args, kwargs), iter(xs))
        out = torch.func.functional_call(module, dict(zip(names, ps, strict=True)), tuple(a), k)
        return tuple(t for t in _flat(out) if _is_float(t))

    return fn, (*[x.detach().clone().requires_grad_() for x in inputs], *params)


# a few small samples per class: the first (no initial state) and second (with one);
# for RNN/GRU also a packed one (index 2)
GRADCHECK = [
    pytest.param(cls, i, id=f"{cls.__name__}-{i}")
    for cls in PAIRS
    for i in ((0, 1, 2) if cls in (nn.RNN, nn.GRU) else (0, 1))
]


@pytest.mark.parametrize(("cls", "index"), GRADCHECK)
def test_gradcheck_and_gradgradcheck(cls: type, index: int) -> None:
    """float64 gradcheck and gradgradcheck of seqlab on module_db samples (inputs and weights)."""
    sample = _samples(cls)[index]
    _, ours = _build(cls, sample.constructor_input)
    fi = sample.forward_input
    fn, inputs = _gradcheck_fn(cls, ours, _copy(fi.args), _copy(fi.kwargs))
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


@pytest.mark.parametrize(("cls", "index"), CASES)
def test_repr_and_factory_kwargs_as_torch(cls: type, index: int) -> None:
    """Same repr as torch.nn's module, and ``dtype=``/``device=`` build float64 parameters."""
    sample = _samples(cls)[index]
    ref, ours = _build(cls, sample.constructor_input)
    assert repr(ours) == repr(ref)
    args, kwargs = sample.constructor_input.args, sample.constructor_input.kwargs
    made = PAIRS[cls](*args, **kwargs, dtype=DTYPE, device="cpu")
    assert [(n, p.shape) for n, p in made.named_parameters()] == [
        (n, p.shape) for n, p in ref.named_parameters()
    ]
    assert all(p.dtype == DTYPE and p.device.type == "cpu" for p in made.parameters())


@pytest.mark.slow
@pytest.mark.parametrize(("cls", "index"), CASES)
def test_gradcheck_and_gradgradcheck_every_sample(cls: type, index: int) -> None:
    """gradcheck and gradgradcheck on every module_db sample (slow: ~135 samples)."""
    test_gradcheck_and_gradgradcheck(cls, index)


def test_every_sample_counted() -> None:
    """The sample lists are what this file parametrizes over (guards a silent empty run)."""
    assert set(INFOS) == set(PAIRS)
    assert all(n > 0 for n in COUNTS.values())
    assert all(n > 0 for n in ERROR_COUNTS.values())
    assert len(CASES) == sum(COUNTS.values())
