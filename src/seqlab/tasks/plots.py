"""PNG plots for a run (matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend must be chosen first)


def plot_losses(events: list[dict[str, Any]], metric: str, path: Path, title: str) -> Path:
    """Training loss per step and the validation ``metric`` at each evaluation."""
    train = [(e["step"], e["loss"]) for e in events if e.get("kind") == "train"]
    evals = [(e["step"], e[metric]) for e in events if e.get("kind") == "eval" and metric in e]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train, strict=True), label="training loss", lw=1, alpha=0.8)
    if evals:
        ax.plot(*zip(*evals, strict=True), "o-", label=f"validation {metric}")
    ax.set_xlabel("optimizer step")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_grad_through_time(curves: dict[str, list[float]], path: Path, title: str) -> Path:
    """Per-step gradient norms ‖∂L/∂h_t‖ (from :func:`seqlab.training.hidden_grad_norms`)
    against the distance T - t, log scale (one line per curve)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, norms in curves.items():
        dist = list(range(len(norms) - 1, -1, -1))  # norms[t] is at distance T-1-t
        ax.semilogy(dist, [max(n, 1e-30) for n in norms], label=label)
    ax.set_xlabel("steps back from the last output (T - t)")
    ax.set_ylabel("gradient norm ‖∂L/∂h_t‖")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_attention(
    alpha: list[list[float]], src: list[str], tgt: list[str], path: Path, title: str
) -> Path:
    """Heat map of attention weights α (rows: output tokens, columns: input tokens)."""
    fig, ax = plt.subplots(figsize=(1 + 0.45 * len(src), 1 + 0.4 * len(tgt)))
    ax.imshow(alpha, cmap="viridis", aspect="auto", vmin=0, vmax=1)
    ax.set_xticks(range(len(src)), src)
    ax.set_yticks(range(len(tgt)), tgt)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
