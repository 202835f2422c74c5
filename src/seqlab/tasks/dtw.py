"""Dynamic time warping and the 1-nearest-neighbour DTW classifier (the classic
time-series-classification baseline; multivariate "dependent" DTW, no warping window).

For series a (n, D) and b (m, D), with the local cost c(i, j) = ‖a_i − b_j‖²:

    G(0, 0) = c(0, 0)
    G(i, j) = c(i, j) + min(G(i−1, j), G(i, j−1), G(i−1, j−1))   (out-of-range terms: +∞)
    DTW(a, b) = G(n−1, m−1)

The batched form pads every series and runs the recursion once for many pairs at a time; G at
a valid cell only reads cells above and to the left of it, so padding never reaches
G(n−1, m−1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def _check(name: str, series: Sequence[Tensor], dims: int | None) -> int:
    if not series:
        raise ValueError(f"{name}: expected at least one series, got none")
    for k, s in enumerate(series):
        if not isinstance(s, Tensor) or s.dim() != 2 or s.shape[0] == 0:
            shape = tuple(s.shape) if isinstance(s, Tensor) else type(s).__name__
            raise ValueError(f"{name}[{k}]: expected a (T >= 1, D) tensor, got {shape}")
        if dims is not None and s.shape[1] != dims:
            raise ValueError(f"{name}[{k}]: expected D = {dims} dimensions, got {s.shape[1]}")
        dims = s.shape[1]
    return dims


def _pad(series: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    lengths = torch.tensor([s.shape[0] for s in series])
    return torch.nn.utils.rnn.pad_sequence(list(series), batch_first=True), lengths


def dtw_matrix(a: Sequence[Tensor], b: Sequence[Tensor], chunk: int = 32) -> Tensor:
    """DTW(a[i], b[j]) for every pair: (len(a), len(b)) float64."""
    dims = _check("a", a, None)
    _check("b", b, dims)
    B, lb = _pad([s.double() for s in b])  # (Nb, Tb, D)
    out = torch.empty(len(a), len(b), dtype=torch.float64)
    for s in range(0, len(a), chunk):
        A, la = _pad([x.double() for x in a[s : s + chunk]])  # (Na, Ta, D)
        # ‖a_i − b_j‖² = ‖a_i‖² + ‖b_j‖² − 2 a_i·b_j, for all pairs at once: (Na, Nb, Ta, Tb)
        cost = (
            (A**2).sum(-1)[:, None, :, None]
            + (B**2).sum(-1)[None, :, None, :]
            - 2 * torch.einsum("ntd,mud->nmtu", A, B)
        ).clamp_min(0.0)
        Ta, Tb = cost.shape[2:]
        g = torch.full((*cost.shape[:2], Ta + 1, Tb + 1), float("inf"), dtype=torch.float64)
        g[:, :, 0, 0] = 0.0
        for i in range(1, Ta + 1):
            for j in range(1, Tb + 1):
                best = torch.minimum(
                    torch.minimum(g[:, :, i - 1, j], g[:, :, i, j - 1]), g[:, :, i - 1, j - 1]
                )
                g[:, :, i, j] = cost[:, :, i - 1, j - 1] + best
        rows = torch.arange(g.shape[0])[:, None]
        cols = torch.arange(g.shape[1])[None, :]
        out[s : s + chunk] = g[rows, cols, la[:, None], lb[None, :]]
    return out


def nn1_dtw(train: Sequence[Tensor], labels: Sequence[str], test: Sequence[Tensor]) -> list[str]:
    """The label of each test series' nearest training series under DTW (first on ties)."""
    if len(train) != len(labels):
        raise ValueError(f"labels: expected {len(train)} (one per series), got {len(labels)}")
    nearest = dtw_matrix(test, train).argmin(1).tolist()
    return [labels[k] for k in nearest]
