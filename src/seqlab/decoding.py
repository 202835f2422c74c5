"""Generic autoregressive decoding: greedy, sampling (temperature/top-k/top-p), beam search.

Every function works with any ``model`` following the decoding protocol:

- ``model.step(tokens: LongTensor (B,), state) -> (logits (B, V), new_state)`` — one step;
- ``model.reorder_state(state, index: LongTensor (B',)) -> state`` — select/repeat batch rows
  (only beam search needs it).

``state`` is opaque here; models build it (``Seq2Seq.start``, ``LanguageModel.start`` ...).
``bos`` is an int or a LongTensor (B,); its batch size must match the state's. With an int,
B comes from ``model.state_batch_size(state)`` when the model has it, else from dim 0 of the
state's first tensor.

Results come as a :class:`Decoded` named tuple, with ``L ≤ max_len`` the longest output:

=============  ===========  ==========================================================
field          shape        meaning
=============  ===========  ==========================================================
``tokens``     (B, L)       generated ids, BOS excluded, EOS included; ``pad`` after it
``lengths``    (B,)         tokens per row including the EOS (max_len if none emitted)
``log_probs``  (B,)         Σ_t log p(y_t | y_<t) over the row's tokens
``scores``     (B,)         ranking score: log_probs / lengths^α (beam), log_probs otherwise
=============  ===========  ==========================================================

With ``n_best = N > 1`` beam search returns ``tokens (B, N, L)`` and (B, N) for the rest,
best first.

Beam-search score: s(y) = log p(y) / |y|^α with α = ``length_penalty`` and |y| the number of
generated tokens including EOS. α = 0 ranks by raw log-probability (favouring short outputs);
α = 1 ranks by mean per-token log-probability. A finished hypothesis (it emitted EOS) is
frozen: it keeps its score and length and extends only with ``pad`` at log-prob 0.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor


class Decodable(Protocol):
    """What the decoding functions need from a model."""

    def step(self, tokens: Tensor, state: Any) -> tuple[Tensor, Any]: ...

    def reorder_state(self, state: Any, index: Tensor) -> Any: ...


class Decoded(NamedTuple):
    tokens: Tensor
    lengths: Tensor
    log_probs: Tensor
    scores: Tensor


def _check_common(max_len: int, eos: int | None) -> None:
    if not isinstance(max_len, int) or isinstance(max_len, bool) or max_len <= 0:
        raise ValueError(f"max_len must be a positive int, got {max_len!r}")
    if eos is not None and (not isinstance(eos, int) or isinstance(eos, bool) or eos < 0):
        raise ValueError(f"eos must be None or a non-negative int, got {eos!r}")


def _check_ids(logits: Tensor, pad: int, eos: int | None) -> None:
    """``pad`` and ``eos`` must be token ids of the model's vocabulary (V = logits.shape[-1]);
    an EOS outside it would never stop a hypothesis."""
    V = logits.shape[-1]
    if not isinstance(pad, int) or isinstance(pad, bool) or not 0 <= pad < V:
        raise ValueError(f"pad must be a token id in [0, V={V}), got {pad!r}")
    if eos is not None and eos >= V:
        raise ValueError(f"eos must be a token id in [0, V={V}), got {eos!r}")


def _check_logits(logits: Tensor, t: int) -> None:
    """NaN logits would make argmax/top-k pick arbitrary tokens; -inf (masking) is fine."""
    if torch.isnan(logits).any():
        raise ValueError(f"model.step returned NaN logits at decoding step {t}")


def _first_step(model: Decodable, state: Any, bos: int | Tensor) -> tuple[Tensor, Tensor, Any]:
    """Run the BOS step; returns (bos tokens (B,), logits (B, V), state)."""
    if isinstance(bos, Tensor):
        if bos.dim() != 1 or bos.is_floating_point():
            raise ValueError(f"bos must be an int or a LongTensor (B,), got {tuple(bos.shape)}")
        tokens = bos.long()
        logits, state = model.step(tokens, state)
    else:
        if not isinstance(bos, int) or bos < 0:
            raise ValueError(f"bos must be a non-negative int or a LongTensor (B,), got {bos!r}")
        # The batch size lives in the opaque state, so ask the model (or the state's first
        # tensor, batch-first) for it.
        tokens = torch.full(
            (_batch_size(model, state),), bos, dtype=torch.long, device=_device(state)
        )
        logits, state = model.step(tokens, state)
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != tokens.shape[0]:
        raise ValueError(
            f"model.step must return logits (B, V) with B={tokens.shape[0]}, "
            f"got {tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__}"
        )
    if not logits.is_floating_point() or logits.shape[1] == 0:
        raise ValueError(
            f"model.step must return float logits (B, V) with V >= 1, got dtype "
            f"{logits.dtype} shape {tuple(logits.shape)}"
        )
    return tokens, logits, state


def _batch_size(model: Any, state: Any) -> int:
    if hasattr(model, "state_batch_size"):
        return int(model.state_batch_size(state))
    leaf = _first_leaf(state)
    if leaf is None:
        raise ValueError(
            "bos is an int but the batch size cannot be inferred from the state; pass bos as a "
            "LongTensor (B,) or give the model a state_batch_size(state) method"
        )
    return int(leaf.shape[0])


def _first_leaf(state: Any) -> Tensor | None:
    if isinstance(state, Tensor):
        return state
    if isinstance(state, (tuple, list)):
        for s in state:
            leaf = _first_leaf(s)
            if leaf is not None:
                return leaf
    if isinstance(state, dict):
        for s in state.values():
            leaf = _first_leaf(s)
            if leaf is not None:
                return leaf
    return None


def _device(state: Any) -> torch.device:
    leaf = _first_leaf(state)
    return leaf.device if leaf is not None else torch.device("cpu")


def _unroll(model, state, bos, max_len, eos, pad, choose) -> Decoded:
    """Shared loop of greedy and sampling: ``choose(logits (B,V)) -> tokens (B,)``."""
    _check_common(max_len, eos)
    _, logits, state = _first_step(model, state, bos)
    _check_ids(logits, pad, eos)
    B = logits.shape[0]
    device = logits.device
    done = torch.zeros(B, dtype=torch.bool, device=device)
    lengths = torch.zeros(B, dtype=torch.long, device=device)
    log_probs = torch.zeros(B, dtype=logits.dtype, device=device)
    out = []
    for t in range(max_len):
        _check_logits(logits, t)
        logp = torch.log_softmax(logits.float(), dim=-1).to(logits.dtype)
        tok = choose(logits)  # (B,)
        tok = torch.where(done, torch.full_like(tok, pad), tok)
        log_probs = log_probs + torch.where(
            done, torch.zeros_like(log_probs), logp.gather(1, tok.unsqueeze(1)).squeeze(1)
        )
        lengths = lengths + (~done).long()
        out.append(tok)
        if eos is not None:
            done = done | (tok == eos)
        if bool(done.all()) or t == max_len - 1:
            break
        logits, state = model.step(tok, state)
    tokens = torch.stack(out, dim=1)
    return Decoded(tokens, lengths, log_probs, log_probs.clone())


@torch.no_grad()
def greedy(
    model: Decodable,
    state: Any,
    bos: int | Tensor,
    max_len: int,
    eos: int | None = None,
    pad: int = 0,
) -> Decoded:
    """Pick y_t = argmax_v p(v | y_<t) until EOS or ``max_len`` tokens."""
    return _unroll(model, state, bos, max_len, eos, pad, lambda z: z.argmax(dim=-1))


def filter_logits(logits: Tensor, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """Mask (to −inf) all but the ``top_k`` largest logits and/or the smallest set of tokens
    whose probability mass reaches ``top_p`` (nucleus). The most likely token always stays."""
    V = logits.shape[-1]
    if top_k is not None:
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k <= 0:
            raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
        k = min(top_k, V)
        kth = logits.topk(k, dim=-1).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Mass strictly before each token: keep a token while that mass is still < top_p.
        before = probs.cumsum(dim=-1) - probs
        drop_sorted = before >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


@torch.no_grad()
def sample(
    model: Decodable,
    state: Any,
    bos: int | Tensor,
    max_len: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos: int | None = None,
    generator: torch.Generator | None = None,
    pad: int = 0,
) -> Decoded:
    """Draw y_t ~ softmax(filter(z_t) / temperature). ``log_probs`` are under the model's
    unmodified distribution."""
    if (
        not isinstance(temperature, (int, float))
        or isinstance(temperature, bool)
        or not math.isfinite(temperature)
        or temperature <= 0
    ):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    filter_logits(torch.zeros(1, 2), top_k, top_p)  # validate arguments up front

    def choose(z: Tensor) -> Tensor:
        z = filter_logits(z.float() / temperature, top_k, top_p)
        probs = torch.softmax(z, dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)

    return _unroll(model, state, bos, max_len, eos, pad, choose)


SAMPLING_OPTIONS = ("temperature", "top_k", "top_p", "generator")


def pick_strategy(strategy: str | None, options: dict[str, Any]) -> str:
    """The decoding a ``generate(..., strategy=None, **options)`` call asks for.

    ``None`` means ``"sample"`` when a sampling option (temperature, top_k, top_p,
    generator) is given, else ``"greedy"``. ``temperature=0`` is the greedy limit of
    sampling (softmax(z/T) tends to one-hot on argmax z as T -> 0), so it gives ``"greedy"``
    with only top_k/top_p/generator given; ``options`` loses the sampling-only keys then.
    """
    if strategy is None:
        strategy = "sample" if any(k in options for k in SAMPLING_OPTIONS) else "greedy"
    if strategy == "sample" and options.get("temperature", 1.0) == 0:
        for k in SAMPLING_OPTIONS:
            options.pop(k, None)
        return "greedy"
    return strategy


@torch.no_grad()
def beam_search(
    model: Decodable,
    state: Any,
    bos: int | Tensor,
    max_len: int,
    beam_size: int,
    eos: int | None = None,
    length_penalty: float = 1.0,
    n_best: int = 1,
    pad: int = 0,
) -> Decoded:
    """Batched beam search over ``K = beam_size`` hypotheses per row (see module docstring).

    The state is expanded B → B·K with ``reorder_state`` (row b·K + k is beam k of row b) and
    followed with ``reorder_state`` after each step. Candidates are ranked by the normalised
    score s = cumulative log p / len^α, so beam 1 is exactly greedy.
    """
    _check_common(max_len, eos)
    if not isinstance(beam_size, int) or isinstance(beam_size, bool) or beam_size <= 0:
        raise ValueError(f"beam_size must be a positive int, got {beam_size!r}")
    if not isinstance(n_best, int) or isinstance(n_best, bool) or not 1 <= n_best <= beam_size:
        raise ValueError(f"n_best must be an int in [1, beam_size={beam_size}], got {n_best!r}")
    if (
        not isinstance(length_penalty, (int, float))
        or isinstance(length_penalty, bool)
        or not math.isfinite(length_penalty)
        or length_penalty < 0
    ):
        raise ValueError(f"length_penalty must be a finite number >= 0, got {length_penalty!r}")
    K = beam_size
    _, logits, state = _first_step(model, state, bos)
    _check_ids(logits, pad, eos)
    B, V = logits.shape
    device = logits.device
    expand = torch.arange(B, device=device).repeat_interleave(K)  # (B·K,)
    state = model.reorder_state(state, expand)
    logits = logits.index_select(0, expand)

    # Only beam 0 is live at the start, so the first top-k picks K distinct tokens.
    cum = torch.full((B, K), float("-inf"), device=device)
    cum[:, 0] = 0.0
    length = torch.zeros(B, K, dtype=torch.long, device=device)
    done = torch.zeros(B, K, dtype=torch.bool, device=device)
    history = torch.zeros(B, K, 0, dtype=torch.long, device=device)
    pad_col = torch.full((V,), float("-inf"), device=device)
    pad_col[pad] = 0.0
    for t in range(max_len):
        _check_logits(logits, t)
        logp = torch.log_softmax(logits.float(), dim=-1).view(B, K, V)
        # Frozen beams: the only continuation is `pad` at no cost.
        logp = torch.where(done.unsqueeze(-1), pad_col, logp)
        cand = cum.unsqueeze(-1) + logp  # (B, K, V)
        cand_len = (length + (~done).long()).unsqueeze(-1).expand(B, K, V)
        ranked = cand / cand_len.clamp(min=1).float().pow(length_penalty)
        ranked = ranked.masked_fill(torch.isnan(ranked), float("-inf"))
        top = ranked.view(B, K * V).topk(K, dim=-1).indices  # (B, K)
        beam = top // V
        tok = top % V
        cum = cand.view(B, K * V).gather(1, top)
        length = cand_len.reshape(B, K * V).gather(1, top)
        was_done = done.gather(1, beam)
        done = was_done | ((tok == eos) if eos is not None else torch.zeros_like(was_done))
        history = torch.cat(
            [history.gather(1, beam.unsqueeze(-1).expand_as(history)), tok.unsqueeze(-1)], dim=-1
        )
        if bool(done.all()) or t == max_len - 1:
            break
        flat = (beam + torch.arange(B, device=device).unsqueeze(1) * K).view(-1)  # (B·K,)
        state = model.reorder_state(state, flat)
        logits, state = model.step(tok.view(-1), state)

    final = cum / length.clamp(min=1).float().pow(length_penalty)
    order = final.argsort(dim=-1, descending=True)[:, :n_best]  # (B, N)
    tokens = history.gather(1, order.unsqueeze(-1).expand(B, n_best, history.shape[-1]))
    lengths = length.gather(1, order)
    # Trim columns that every kept hypothesis leaves as padding.
    tokens = tokens[..., : int(lengths.max())]
    result = Decoded(tokens, lengths, cum.gather(1, order), final.gather(1, order))
    if n_best == 1:
        result = Decoded(*(x.squeeze(1) for x in result))
    return result


def select_rows(state: Any, index: Tensor, dim: int = 0) -> Any:
    """Index-select ``dim`` of every tensor in a (nested tuple/list/dict) state; a helper for
    implementing ``reorder_state``. Non-tensor leaves (ints, None) pass through."""
    if isinstance(state, Tensor):
        return state.index_select(dim, index.to(state.device))
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        return type(state)(*(select_rows(s, index, dim) for s in state))
    if isinstance(state, (tuple, list)):
        return type(state)(select_rows(s, index, dim) for s in state)
    if isinstance(state, dict):
        return {k: select_rows(v, index, dim) for k, v in state.items()}
    return state
