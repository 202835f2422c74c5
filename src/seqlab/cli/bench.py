"""``seqlab bench``: training-step throughput of each model kind at one size."""

from __future__ import annotations

import time

import click
import torch
import torch.nn.functional as F
from rich.table import Table

from seqlab.cli.progress import make_console
from seqlab.functional.spec import cell_choices
from seqlab.tasks.base import MODEL_KINDS
from seqlab.tasks.shakespeare import ShakespeareConfig, build_model

console = make_console()


def time_step(
    kind: str, vocab: int, hidden: int, batch: int, seq: int, repeats: int, impl: str = "torch"
) -> float:
    """Median seconds of one forward+backward+Adam step of a character LM of ``kind`` (the
    shakespeare task's model; ``impl`` picks the recurrent layers)."""
    cfg = ShakespeareConfig(model=kind, embed=64, hidden=hidden, context=max(seq, 8), impl=impl)
    model = build_model(cfg, vocab)
    opt = torch.optim.Adam(model.parameters())
    x = torch.randint(0, vocab, (batch, seq))
    y = torch.randint(0, vocab, (batch, seq))
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        logits, _ = model(x)
        loss = F.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:  # the first step warms up allocators
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


@click.command()
@click.option(
    "--models",
    default=",".join(MODEL_KINDS),
    show_default=True,
    help="Comma-separated model kinds: any registered cell kind (lnlstm, ...) or transformer.",
)
@click.option("--hidden", type=int, default=256, show_default=True)
@click.option("--batch", type=int, default=32, show_default=True)
@click.option("--seq", type=int, default=100, show_default=True)
@click.option("--repeats", type=int, default=5, show_default=True)
@click.option("--threads", type=int, default=2, show_default=True)
@click.option(
    "--impl",
    type=click.Choice(["torch", "seqlab"]),
    default="torch",
    show_default=True,
    help="Recurrent layers: torch.nn's fused kernels or seqlab's engine.",
)
def bench(
    models: str, hidden: int, batch: int, seq: int, repeats: int, threads: int, impl: str
) -> None:
    """Time a training step (forward, backward, Adam) of a character LM per model kind."""
    from seqlab.cli.validate import check_bench

    check_bench(hidden, batch, seq, repeats, threads)
    torch.set_num_threads(threads)
    kinds = [k.strip() for k in models.split(",") if k.strip()]
    allowed = cell_choices() + tuple(k for k in MODEL_KINDS if k not in cell_choices())
    bad = [k for k in kinds if k not in allowed]
    if bad:
        raise click.BadParameter(
            f"unknown {bad}; expected some of {', '.join(allowed)}", param_hint="--models"
        )
    table = Table("model", "ms/step", "tokens/s")
    for kind in kinds:
        s = time_step(kind, 80, hidden, batch, seq, repeats, impl)
        table.add_row(kind, f"{s * 1e3:.1f}", f"{batch * seq / s:,.0f}")
    console.print(f"B={batch} T={seq} H={hidden} threads={threads} impl={impl}")
    console.print(table)
