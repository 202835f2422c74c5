"""The adding problem (Hochreiter & Schmidhuber 1997): a long-range many-to-one task.

Each input step is a pair ``(v_t, m_t)``: ``v_t ~ U(0, 1)`` and a marker ``m_t`` that is 1
at exactly two steps (one in each half of the sequence) and 0 elsewhere. The target is the
sum of the two marked values. Always answering 1 (the mean) gives MSE 1/6 ≈ 0.167, so a
model has learned the task only when its MSE falls well below that; it must carry a value
across up to T steps, which a vanilla RNN finds hard and an LSTM does not.

Run: ``python -m seqlab.examples.adding [--steps N] [--length T]``.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import Tensor, nn

from seqlab.models import make_recurrent

BASELINE_MSE = 1.0 / 6.0


def adding_batch(batch: int, length: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Inputs ``(B, T, 2)`` and targets ``(B,)`` of the adding problem."""
    values = torch.rand(batch, length, generator=generator)
    half = length // 2
    first = torch.randint(0, half, (batch,), generator=generator)
    second = torch.randint(half, length, (batch,), generator=generator)
    markers = torch.zeros(batch, length)
    rows = torch.arange(batch)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    targets = values[rows, first] + values[rows, second]
    return torch.stack([values, markers], dim=-1), targets


class AddingModel(nn.Module):
    """Recurrent layer (batch first) → last hidden state → linear head: ``ŷ = w · h_T + b``."""

    def __init__(self, cell: str, hidden_size: int) -> None:
        super().__init__()
        # any registered cell kind by its cell= name (rnn, lstm, gru, lnlstm, ...)
        self.rnn = make_recurrent(cell, 2, hidden_size)
        self.head = nn.Linear(hidden_size, 1)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.rnn(x)  # (B, T, H)
        return self.head(out[:, -1]).squeeze(-1)


def train(
    cell: str, steps: int, length: int, hidden: int = 32, seed: int = 0, log_every: int = 100
) -> dict[str, float]:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = AddingModel(cell, hidden)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        x, y = adding_batch(64, length, gen)
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % log_every == 0 or step == 1:
            print(f"  {cell:>4} step {step:5d}  train MSE {loss.item():.4f}")
    x, y = adding_batch(2000, length, torch.Generator().manual_seed(10_000 + seed))
    with torch.no_grad():
        pred = model(x)
    mse = nn.functional.mse_loss(pred, y).item()
    accuracy = ((pred - y).abs() < 0.04).float().mean().item()
    return {"mse": mse, "accuracy": accuracy, "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--length", type=int, default=50)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    print(
        f"Adding problem, T={args.length}; always answering the mean gives MSE {BASELINE_MSE:.3f}"
    )
    results = {cell: train(cell, args.steps, args.length) for cell in ("lstm", "rnn")}
    print("\nheld-out (2000 sequences):   MSE   |error|<0.04   time")
    for cell, r in results.items():
        print(f"  {cell:>4}{r['mse']:24.4f}{r['accuracy']:12.1%}{r['seconds']:8.1f}s")


if __name__ == "__main__":
    main()
