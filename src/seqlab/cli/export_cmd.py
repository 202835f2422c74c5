"""``seqlab export RUN --onnx out.onnx``: a trained run's model as ONNX, checked with onnxruntime.

What each task writes (the vocabularies and settings go into the file's ``metadata_props``,
so the .onnx file is all a deployment needs):

==================  ==========================================================
task                graph(s)
==================  ==========================================================
charlm              the LanguageModel: (tokens, state) → (logits, state); T = 1 steps
classify            the SequenceClassifier: (inputs, lengths) → logits
seq2seq, translate  the Seq2Seq: ``<stem>.encoder.onnx`` and ``<stem>.decoder.onnx``
forecast            the forecaster: a window x (B, W) of standardised values → ŷ (B,)
==================  ==========================================================
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import torch
from torch import nn

from seqlab.cli.errors import friendly_errors
from seqlab.tasks import RunDir, task_of_run


def _example_ids(vocab_size: int, batch: int = 3, steps: int = 9) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, max(5, vocab_size), (batch, steps), generator=g)
    ids = ids.clamp(max=vocab_size - 1)
    lengths = torch.tensor([steps, max(1, steps - 4), 1][:batch])
    return ids, lengths


def _refuse_transformer(model: nn.Module, task: str) -> None:
    raise ValueError(
        f"{task}: the ONNX export covers the recurrent models; this run trained "
        f"{type(model).__name__} (model=transformer)"
    )


def export_run(run: RunDir, out: Path, loop: bool = False) -> list[Path]:
    """Export the best checkpoint of ``run`` to ``out`` (see the module docstring)."""
    from seqlab.export import to_onnx
    from seqlab.models import LanguageModel, Seq2Seq, SequenceClassifier

    task = task_of_run(run)
    meta: dict[str, Any] = {"seqlab_task": task.name, "seqlab_run": str(run.path)}
    if task.name == "charlm":
        model, vocab, _cfg = task.load(run)
        if not isinstance(model, LanguageModel):
            _refuse_transformer(model, task.name)
        meta["vocab"] = vocab.itos
        example: Any = (_example_ids(len(vocab))[0],)
    elif task.name == "classify":
        model, vocab, labels, _cfg = task.load(run)
        if not isinstance(model, SequenceClassifier) or model.config.cell == "transformer":
            _refuse_transformer(model, task.name)
        meta.update(vocab=vocab.itos, labels=labels)
        example = _example_ids(len(vocab))
    elif task.name in ("seq2seq", "translate"):
        model, src_vocab, tgt_vocab, _cfg = task.load(run)
        if not isinstance(model, Seq2Seq):
            _refuse_transformer(model, task.name)
        meta.update(src_vocab=src_vocab.itos, tgt_vocab=tgt_vocab.itos)
        example = _example_ids(len(src_vocab), steps=7)
    elif task.name == "forecast":
        model, run_meta, cfg = task.load(run)
        if model.net.config.cell == "transformer":
            _refuse_transformer(model, task.name)
        meta.update(mean=run_meta["mean"], std=run_meta["std"], window=cfg.window)
        example = (torch.randn(3, cfg.window, generator=torch.Generator().manual_seed(0)),)
    else:
        raise ValueError(f"{task.name}: no ONNX export for this task")
    return to_onnx(model, example, out, loop=loop, metadata=meta)


@click.command("export")
@click.argument("run_dir", metavar="RUN", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--onnx",
    "onnx_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Output file (g2p writes <stem>.encoder.onnx and <stem>.decoder.onnx).",
)
@click.option(
    "--loop",
    is_flag=True,
    help="Lower recurrent layers to ONNX Scan loops instead of the RNN/LSTM/GRU operators.",
)
@friendly_errors
def export(run_dir, onnx_path, loop):
    """Export a trained RUN's model to ONNX, checked against onnxruntime before writing."""
    try:
        paths = export_run(RunDir(run_dir), Path(onnx_path), loop)
    except (ImportError, RuntimeError) as e:  # onnx missing, or onnxruntime disagreed
        raise click.ClickException(str(e)) from e
    for p in paths:
        click.echo(f"wrote {p} (onnxruntime output equals the model's)")
