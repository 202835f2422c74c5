"""Gradient flow through time as data: ``‖∂L/∂h_t‖`` for every step ``t``.

Why: in a vanilla RNN ``∂L/∂h_t = (∂h_{t+1}/∂h_t)ᵀ ∂L/∂h_{t+1} + (direct term)`` with
``∂h_{t+1}/∂h_t = diag(tanh'(·)) W_hh``, so the gradient reaching step ``t`` from a loss at
step ``T`` is multiplied by that Jacobian ``T − t`` times and shrinks (or explodes)
geometrically. The LSTM's cell path ``c_t = f_t ⊙ c_{t−1} + …`` multiplies only by the
forget gate, so with ``f ≈ 1`` the gradient survives. This module measures it.

How: the layer is run one step at a time with its own ``(x, state) -> (out, state)``
contract (a chunk of length 1 with carried state gives exactly the full forward). After
each step the top layer's hidden state is copied into a fresh graph node ``z_t`` and *both*
uses of ``h_t`` — the output at step ``t`` and the state fed to step ``t + 1`` — are routed
through ``z_t``. Then ``autograd.grad(L, z_t)`` is the **total** derivative ``dL/dh_t``
(direct + through the future), with no double counting. For LSTMs the same is done for the
cell state ``c_t``.

What is reported: for layers (``torch.nn.RNN/LSTM/GRU`` or seqlab's, unidirectional,
any ``num_layers``) the top layer's ``h_t``, whose values are the layer's outputs; for
cells (stepped by :func:`seqlab.cells.cell_step`: ``step(x (B, I), state) -> (y, state)``)
the cell's ``h_t``. Norms are Frobenius
over the batch: ``‖∂L/∂h_t‖ = sqrt(Σ_{b,j} (∂L/∂h_t[b, j])²)``.

Example::

    flow = hidden_grad_norms(nn.RNN(2, 32), x, lambda out, state: ((out[-1] @ w) - y).pow(2).mean())
    flow.h[0] / flow.h[-1]          # ≪ 1: vanishing gradient
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from seqlab.cells import cell_step
from seqlab.training.tbptt import State


class GradFlow(NamedTuple):
    """Per-step gradient norms ``h[t] = ‖dL/dh_t‖`` (T,), ``c[t] = ‖dL/dc_t‖`` (T,) for
    LSTM-like states (else None), and the loss value."""

    h: Tensor
    c: Tensor | None
    loss: float


def _is_cell(module: Any) -> bool:
    if isinstance(module, nn.RNNCellBase):
        raise TypeError(
            "module: torch.nn cells have no step(x, state) -> (y, state); use a layer "
            "(torch.nn.RNN/LSTM/GRU) or a seqlab cell (same call and weights as torch.nn's)"
        )
    return not hasattr(module, "num_layers")


def _split(state: State) -> tuple[Tensor, Tensor | None]:
    if isinstance(state, Tensor):
        return state, None
    return state[0], state[1] if len(state) > 1 else None


def _rebuild(old: State, h: Tensor, c: Tensor | None) -> State:
    if isinstance(old, Tensor):
        return h
    parts = [h, c if c is not None else old[1], *old[2:]]
    return type(old)(*parts) if hasattr(old, "_fields") else type(old)(parts)


def _route(full: Tensor, is_cell: bool) -> tuple[Tensor, Tensor]:
    """A fresh node ``z`` for the top layer and the full state rebuilt around it."""
    if is_cell:
        z = full.clone()
        return z, z
    z = full[-1].clone()  # (B, H): top layer, forward direction
    return z, torch.cat([full[:-1], z.unsqueeze(0)], dim=0)


def _is_model(module: Any) -> bool:
    return hasattr(module, "config") and not hasattr(module, "num_layers")


def _model_grad_norms(model: nn.Module, x: Any, loss_fn: Callable, part: str | None) -> GradFlow:
    from seqlab.inspection.probe import Probe  # the probe imports the layers; keep it lazy

    args = x if isinstance(x, tuple) else (x,)
    with torch.enable_grad(), Probe(model) as probe:
        result = model(*args)
    first, second = result[:2] if isinstance(result, tuple) else (result, None)
    with torch.enable_grad():
        loss = loss_fn(first, second)
    name = part if part is not None else probe.order[-1]
    if name not in probe.parts:
        raise ValueError(f"part: expected one of {probe.order}, got {part!r}")
    per_k = probe.grad_norms(loss)[name]
    D = probe.directions(name)
    top = per_k[-D:]

    def joined(kind: str) -> Tensor | None:
        if kind not in top[0]:
            return None
        return torch.stack([d[kind] for d in top]).pow(2).sum(0).sqrt()

    return GradFlow(joined("h"), joined("c"), float(loss.detach()))


def hidden_grad_norms(
    module: nn.Module,
    x: Tensor,
    loss_fn: Callable[[Tensor, State], Tensor],
    state: State = None,
    batch_first: bool = False,
    part: str | None = None,
) -> GradFlow:
    """Measure ``‖dL/dh_t‖`` for ``t = 0 … T−1`` (see module docstring).

    ``x``: (T, B, I), or (B, T, I) with ``batch_first`` (match the module's own setting).
    ``loss_fn(outputs, final_state) -> scalar``: ``outputs`` has the module's output layout
    ((T, B, H) or (B, T, H)) and holds the top layer's ``h_t``. ``state=None`` means zeros.

    A seqlab model (classifier, tagger, language model, generator, seq2seq: a module with a
    ``config`` and recurrent parts) is measured whole: ``x`` is its input (or a tuple of its
    positional inputs), ``loss_fn(first, second)`` receives its result (``(logits, state)``
    of a language model, ``(logits, attention)`` of a seq2seq, ``(logits, None)`` for a
    single output), and ``‖dL/dh_t‖`` is that of the top layer of ``part`` (default: the
    last recurrent part that ran, e.g. a seq2seq's decoder), both directions together when
    bidirectional (see :class:`seqlab.inspection.Probe`).
    """
    if part is not None or _is_model(module):
        return _model_grad_norms(module, x, loss_fn, part)
    if getattr(module, "bidirectional", False):
        raise ValueError("module: a bidirectional layer has no single dL/dh_t; use one direction")
    if x.dim() != 3:
        raise ValueError(f"x: expected (T, B, I) or (B, T, I), got shape {tuple(x.shape)}")
    is_cell = _is_cell(module)
    tdim = 1 if batch_first else 0
    zs_h: list[Tensor] = []
    zs_c: list[Tensor] = []
    for t in range(x.shape[tdim]):
        if is_cell:
            _, new = cell_step(module)(x.select(tdim, t), state)
        else:
            _, new = module(x.narrow(tdim, t, 1), state)
        h, c = _split(new)
        z_h, h_full = _route(h, is_cell)
        zs_h.append(z_h)
        if c is not None:
            z_c, c_full = _route(c, is_cell)
            zs_c.append(z_c)
        else:
            c_full = None
        state = _rebuild(new, h_full, c_full)
    outputs = torch.stack(zs_h, dim=tdim)  # (T, B, H) or (B, T, H)
    loss = loss_fn(outputs, state)
    grads = torch.autograd.grad(loss, zs_h + zs_c, allow_unused=True)

    def norms(gs: tuple[Tensor | None, ...]) -> Tensor:
        return torch.stack(
            [g.norm() if g is not None else torch.zeros((), dtype=x.dtype) for g in gs]
        ).detach()

    T = len(zs_h)
    return GradFlow(norms(grads[:T]), norms(grads[T:]) if zs_c else None, float(loss.detach()))


def _one_direction(module: nn.Module, suffix: str, batch_first: bool) -> nn.Module:
    """A one-layer, one-direction torch.nn copy of ``module``'s ``_l0{suffix}`` weights."""
    mode = str(module.mode).lower()
    kinds = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn_tanh": nn.RNN, "rnn_relu": nn.RNN}
    params = dict(module.named_parameters())
    bias = f"bias_ih_l0{suffix}" in params
    if mode not in kinds:  # any other registered kind: a one-direction seqlab layer
        from seqlab.functional.spec import SPECS
        from seqlab.layers import make_layer

        if module.mode not in SPECS:
            raise ValueError(
                f"module: expected a recurrent layer of a registered cell kind, got mode "
                f"{module.mode!r}"
            )
        dtype = params["weight_ih_l0"].dtype
        copy = make_layer(module.mode, module.input_size, module.hidden_size, bias=bias,
                          batch_first=batch_first, dtype=dtype)  # fmt: skip
        copy.load_state_dict({n: params[n + suffix].detach() for n, _ in copy.named_parameters()})
        return copy
    extra = {"nonlinearity": mode[4:]} if mode.startswith("rnn") else {}
    copy = kinds[mode](
        module.input_size, module.hidden_size, bias=bias, batch_first=batch_first, **extra
    )
    names = ["weight_ih_l0", "weight_hh_l0"] + (["bias_ih_l0", "bias_hh_l0"] if bias else [])
    copy.load_state_dict({n: params[n + suffix].detach() for n in names})
    return copy.to(params["weight_ih_l0"].dtype)


def bidirectional_grad_norms(
    module: nn.Module,
    x: Tensor,
    loss_fn: Callable[[Tensor], Tensor],
    batch_first: bool = False,
) -> tuple[GradFlow, GradFlow]:
    """``‖dL/dh→_t‖`` and ``‖dL/dh←_t‖`` for a one-layer bidirectional layer, both indexed
    by position ``t`` (torch.nn's or seqlab's LSTM/GRU/RNN).

    The two directions of one layer do not feed each other: the outputs are
    ``[h→_t; h←_t]`` with ``h→_t = f(x_t, h→_{t−1})`` and ``h←_t = f'(x_t, h←_{t+1})``. So
    the total derivative for one direction is measured by :func:`hidden_grad_norms` on a
    one-direction copy of its weights (the backward one reading the reversed sequence) while
    the other direction's outputs enter ``loss_fn(outputs)`` as constants. ``h→_t`` reaches
    the loss also through later steps, ``h←_t`` through earlier ones.
    """
    if not getattr(module, "bidirectional", False) or getattr(module, "num_layers", 1) != 1:
        raise ValueError("module: expected a one-layer bidirectional layer")
    tdim = 1 if batch_first else 0
    fwd = _one_direction(module, "", batch_first)
    bwd = _one_direction(module, "_reverse", batch_first)
    x_rev = x.detach().flip(tdim)
    with torch.no_grad():
        out_f = fwd(x.detach())[0]
        out_b = bwd(x_rev)[0].flip(tdim)
    flow_f = hidden_grad_norms(
        fwd, x.detach(), lambda o, _s: loss_fn(torch.cat([o, out_b], -1)), batch_first=batch_first
    )
    flow_b = hidden_grad_norms(
        bwd,
        x_rev,
        lambda o, _s: loss_fn(torch.cat([out_f, o.flip(tdim)], -1)),
        batch_first=batch_first,
    )
    back = GradFlow(
        flow_b.h.flip(0), flow_b.c.flip(0) if flow_b.c is not None else None, flow_b.loss
    )
    return flow_f, back
