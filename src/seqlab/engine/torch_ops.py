"""The ``torch`` backend: the classic cells on PyTorch's own fused RNN kernels.

One layer, one direction of ``rnn_tanh``, ``rnn_relu``, ``lstm`` and ``gru`` (reset after,
torch.nn's convention) is handed, with the same weights, to the functions ``torch.nn.RNN``,
``LSTM`` and ``GRU`` themselves call (``torch._VF.rnn_tanh/rnn_relu/lstm/gru``): cuDNN on
CUDA, oneDNN/ATen on CPU. Their gate layouts are seqlab's (``i f g o``, ``r z n``), so
``(w_ih, w_hh, b_ih, b_hh)`` pass through unchanged. Autograd is torch's own (double
backward included where torch has it, e.g. on CPU).

seqlab's ``lengths`` semantics map onto a packed sequence: each row runs over its valid
prefix, outputs 0 on padding, and ends with the state at its last valid step. Two details
differ from packing and are handled here: a row of length 0 (packing rejects it) keeps its
initial state and outputs zeros, and ``reverse`` runs over each row's reversed valid prefix
(:func:`seqlab.functional.scan.reverse_padded` before and after a forward run).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from seqlab.functional.scan import reverse_padded

#: cell kinds (spec names) torch has a kernel for, and that kernel's name in ``torch._VF``
OPS = {"rnn_tanh": "rnn_tanh", "rnn_relu": "rnn_relu", "lstm": "lstm", "gru": "gru"}


def covers(mode: str) -> bool:
    return mode in OPS


def _weights(params: Sequence[Tensor | None]) -> tuple[list[Tensor], bool]:
    # an LSTM projection's w_hr comes last, as in torch.nn's flat weights (torch infers
    # proj_size from h0's width differing from c0's)
    w_ih, w_hh, b_ih, b_hh, *w_hr = params
    if b_ih is None and b_hh is None:
        return [w_ih, w_hh, *w_hr], False
    # torch takes both biases or none: an absent one is zero
    b_ih = torch.zeros_like(b_hh) if b_ih is None else b_ih
    b_hh = torch.zeros_like(b_ih) if b_hh is None else b_hh
    return [w_ih, w_hh, b_ih, b_hh, *w_hr], True


def run(
    mode: str,
    x: Tensor,
    state: tuple[Tensor, ...],
    params: Sequence[Tensor | None],
    lengths: Tensor | None,
    reverse: bool,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """``(y (T, B, H), final_state)`` as :func:`seqlab.engine.run` defines them.

    ``x`` (T, B, I) with T, B > 0; ``state`` ``(h0,)`` or ``(h0, c0)``, each (B, H);
    an LSTM with a projection passes ``w_hr`` (P, H) as a 5th parameter, ``h0`` (B, P) and
    ``w_hh`` (4H, P) (:func:`seqlab.engine.proj.run_proj`); ``y`` is then (T, B, P);
    ``lengths`` (B,) int64 on ``x``'s device, values in [0, T] (checked by the caller).
    """
    op = getattr(torch._VF, OPS[mode])
    weights, has_bias = _weights(params)
    T = x.shape[0]
    hx = tuple([s.unsqueeze(0) for s in state])  # (num_layers·D = 1, B, H)
    hx_arg = hx if mode == "lstm" else hx[0]
    if lengths is None:
        xs = x.flip(0) if reverse else x
        y, *final = op(xs, hx_arg, weights, has_bias, 1, 0.0, False, False, False)
        return (y.flip(0) if reverse else y), tuple([f.squeeze(0) for f in final])
    xs = reverse_padded(x, lengths) if reverse else x
    packed = pack_padded_sequence(xs, lengths.clamp(min=1).cpu(), enforce_sorted=False)
    order = packed.sorted_indices
    hx_sorted = tuple([h.index_select(1, order) for h in hx])
    hx_arg = hx_sorted if mode == "lstm" else hx_sorted[0]
    data, *final = op(
        packed.data, packed.batch_sizes, hx_arg, weights, has_bias, 1, 0.0, False, False
    )
    out = PackedSequence(data, packed.batch_sizes, order, packed.unsorted_indices)
    y, _ = pad_packed_sequence(out, total_length=T)
    final = [f.index_select(1, packed.unsorted_indices).squeeze(0) for f in final]
    # rows of length 0 ran one step above (clamped to 1): undo it. Applied unconditionally,
    # so that no device-to-host sync asks whether any row is empty
    empty = (lengths == 0).view(-1, 1)
    y = y.masked_fill(empty.unsqueeze(0), 0.0)
    final = [torch.where(empty, s, f) for s, f in zip(state, final, strict=True)]
    if reverse:
        y = reverse_padded(y, lengths)
    return y, tuple(final)
