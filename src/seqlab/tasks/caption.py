"""Task ``caption``: one-to-many with attention, captioning strips of handwritten digits.

Data: scikit-learn's 1,797 real 8×8 digit images. They are split FIRST (seeded, 80 / 10 / 10
% of the images for train / validation / test), so no test image is ever seen in training.
What is synthetic: the strips. Each strip puts 2-5 images of one split side by side
(8 × 8L pixels), drawn uniformly at random with their lengths; its caption is the digits'
English words ("seven two nine"). Training strips are drawn afresh every epoch, each image
moved up or down by up to ``shift`` rows and followed by up to ``gap`` blank columns
(augmentation; validation and test strips are the plain images side by side); validation
(checkpoint choice, exact match) and test strips are fixed by the seed. The dataset does not
record writers, so "held-out images" cannot promise held-out writers.

Model (:class:`Captioner`). Encoder: ``conv_layers`` 3×3 convolutions (ReLU) over the strip,
each column's 8 pixels × C channels projected to E, then a bidirectional recurrent layer along
the columns: memory m_1..m_W (W = 8L). Decoder, Generator-style
(:mod:`seqlab.models.generator`), with v = mean_j m_j as the conditioning vector and Bahdanau
attention over the columns:

    s_0 = tanh(W_s v)
    c_t = Σ_j α_tj m_j,  α_t = softmax_j(wᵀ tanh(W_q s_{t−1} + W_m m_j))
    f_t = Emb(y_{t−1})                 feedback = "previous"
        = Emb(BOS) at t = 1, else 0    feedback = "zeros" (the seeds' one-to-many)
    s_t = Cell([f_t; c_t], s_{t−1});   õ_t = tanh(W_c [s_t; c_t]);   logits_t = W_o õ_t

Decoding: greedy or beam search (:mod:`seqlab.decoding`). Metrics: exact caption match
overall and per strip length, and word error rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.data import BOS, EOS, PAD, Vocab, pad_batch, split_indices
from seqlab.data.series import digits
from seqlab.decoding import beam_search, greedy
from seqlab.models.attention import Attention
from seqlab.models.encoders import (
    CellStack,
    RecurrentEncoder,
    State,
    select_batch,
    state_from_h,
    top_hidden,
)
from seqlab.tasks.base import (
    Task,
    TaskConfig,
    config_dict,
    count_parameters,
    fit,
    init_forget_bias,
    load_config,
)
from seqlab.tasks.g2p import error_rates
from seqlab.tasks.memspan import (
    memory_span_callback,
    plot_memory_span,
    plot_probe_grads,
    record_memory_span,
)
from seqlab.tasks.phases import native_build, phase
from seqlab.tasks.plots import plot_losses, plt
from seqlab.tasks.rundir import RunDir

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
FEEDBACKS = ("previous", "zeros")
MAX_WORDS = 8  # longest caption decoded (and longest strip ``predict`` composes)


@dataclass
class CaptionConfig(TaskConfig):
    channels: int = 16  # feature maps of the image encoder's convolution(s)
    conv_layers: int = 1  # 3×3 convolutions (ReLU after each) before the column projection
    embed: int = 32  # word embedding size of the decoder
    hidden: int = 64  # encoder per direction; the decoder has 2·hidden
    dropout: float = 0.3  # dropout on the column features and the decoder inputs and outputs
    shift: int = 1  # training strips: move each image up/down by up to this many rows
    gap: int = 2  # training strips: up to this many blank columns after each image
    feedback: str = "previous"  # previous | zeros
    sampling: float = 0.0  # previous: chance of feeding the model's own last word in training
    min_digits: int = 2  # fewest digit images in a strip
    max_digits: int = 5  # most digit images in a strip
    strips_per_epoch: int = 6400  # training strips composed afresh for each pass
    valid_strips: int = 500  # fixed validation strips (from the validation images only)
    test_strips: int = 2000  # fixed test strips (from the held-out test images only)
    beam: int = 3  # beam size for the test decoding reported next to greedy
    batch_size: int = 64
    lr: float = 3e-3
    max_steps: int = 3000
    minutes: float = 10.0
    clock: str = "cpu"
    threads: int = 1
    eval_every: int = 250
    lr_final: float = 0.1
    model: str = "gru"


class CaptionState(NamedTuple):
    rnn: State
    memory: Tensor  # (B, W, M)
    keys: Tensor  # (B, W, A)
    mask: Tensor  # (B, W)
    t: Tensor  # (B,) steps taken


class Captioner(nn.Module):
    """Image strip (B, 8, W) + widths -> caption logits; see the module docstring."""

    def __init__(self, cfg: CaptionConfig, vocab_size: int) -> None:
        super().__init__()
        if cfg.feedback not in FEEDBACKS:
            raise ValueError(
                f"feedback: expected one of {', '.join(FEEDBACKS)}, got {cfg.feedback!r}"
            )
        if not 0.0 <= cfg.sampling <= 1.0:
            raise ValueError(f"sampling: expected a probability in [0, 1], got {cfg.sampling}")
        self.feedback, self.sampling = cfg.feedback, cfg.sampling
        if cfg.conv_layers not in (1, 2):
            raise ValueError(f"conv_layers: expected 1 or 2, got {cfg.conv_layers}")
        self.conv = nn.Conv2d(1, cfg.channels, 3, padding=1)
        # a second 3×3 layer sees 5×5 pixels: strokes, not single pixel pairs
        self.conv2 = (
            nn.Conv2d(cfg.channels, cfg.channels, 3, padding=1) if cfg.conv_layers == 2 else None
        )
        self.column = nn.Linear(8 * cfg.channels, cfg.embed)
        self.encoder = RecurrentEncoder(cfg.model, cfg.embed, cfg.hidden, 1, True, 0.0, cfg.impl)
        M = Hd = 2 * cfg.hidden
        self.init = nn.Linear(M, Hd)
        self.embed = nn.Embedding(vocab_size, cfg.embed, padding_idx=PAD)
        self.attention = Attention("additive", Hd, M)
        self.decoder = CellStack(cfg.model, cfg.embed + M, Hd)
        self.combine = nn.Linear(Hd + M, Hd)
        self.out = nn.Linear(Hd, vocab_size)
        self.drop = nn.Dropout(cfg.dropout)
        self.cell = cfg.model
        self.last_weights: Tensor | None = None
        self.last_output: Tensor | None = None

    def start(self, images: Tensor, widths: Tensor) -> CaptionState:
        if images.dim() != 3 or images.shape[1] != 8:
            raise ValueError(f"images: expected (B, 8, W) strips, got {tuple(images.shape)}")
        B, _, W = images.shape
        x = F.relu(self.conv(images.unsqueeze(1)))  # (B, C, 8, W)
        if self.conv2 is not None:
            x = F.relu(self.conv2(x))
        cols = x.permute(0, 3, 1, 2).reshape(B, W, -1)  # (B, W, C·8)
        memory, _ = self.encoder(self.drop(torch.tanh(self.column(cols))), widths)
        mask = torch.arange(W).unsqueeze(0) < widths.unsqueeze(1)
        v = memory.sum(1) / widths.unsqueeze(1).to(memory.dtype)  # padded outputs are 0
        h = torch.tanh(self.init(v)).unsqueeze(0)
        rnn = state_from_h(self.cell, h)
        keys = self.attention.prepare(memory)
        return CaptionState(rnn, memory, keys, mask, torch.zeros(B, dtype=torch.long))

    def step(self, tokens: Tensor, state: CaptionState) -> tuple[Tensor, CaptionState]:
        s_prev = top_hidden(state.rnn)
        ctx, self.last_weights = self.attention(s_prev, state.keys, state.memory, state.mask)
        f = self.embed(tokens)
        if self.feedback == "zeros":
            f = f * (state.t == 0).unsqueeze(1).to(f.dtype)
        s, rnn = self.decoder.step(self.drop(torch.cat([f, ctx], -1)), state.rnn)
        self.last_output = s  # the top layer's s_t as the readout sees it (memory span)
        o = torch.tanh(self.combine(torch.cat([s, ctx], -1)))
        return self.out(self.drop(o)), state._replace(rnn=rnn, t=state.t + 1)

    def reorder_state(self, state: CaptionState, index: Tensor) -> CaptionState:
        return CaptionState(
            select_batch(state.rnn, index), *(x.index_select(0, index) for x in state[1:])
        )

    def state_batch_size(self, state: CaptionState) -> int:
        return state.memory.shape[0]

    def forward(self, images: Tensor, widths: Tensor, tgt_in: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher-forced logits (B, T, V) and attention weights (B, T, W). In training with
        ``sampling`` = p > 0 (scheduled sampling, Bengio et al. 2015), each row's input word
        at step t > 1 is the model's own greedy word of step t − 1 with probability p, else
        the reference word, so training sees the kind of prefixes greedy decoding produces."""
        state = self.start(images, widths)
        logits, weights = [], []
        for t in range(tgt_in.shape[1]):
            tokens = tgt_in[:, t]
            if self.training and self.sampling > 0 and t > 0:
                own = torch.rand(tokens.shape) < self.sampling
                tokens = torch.where(own, logits[-1].detach().argmax(-1), tokens)
            z, state = self.step(tokens, state)
            logits.append(z)
            weights.append(self.last_weights)
        return torch.stack(logits, 1), torch.stack(weights, 1)


# --- strips ------------------------------------------------------------------------------
def split_images(n: int, seed: int) -> list[list[int]]:
    """Image indices for (train, valid, test): 80 / 10 / 10 %, before any strip is made."""
    return split_indices(n, (0.8, 0.1, 0.1), seed=seed)


def compose(
    images: Tensor,
    labels: Tensor,
    pool: list[int],
    n: int,
    lo: int,
    hi: int,
    g: torch.Generator,
    shift: int = 0,
    gap: int = 0,
) -> list[tuple[Tensor, list[str], list[int]]]:
    """``n`` strips of ``lo..hi`` images drawn (with replacement) from ``pool``:
    [(strip (8, ·), caption words, image indices)]. With ``shift``/``gap`` > 0 (training
    augmentation) each image moves up or down by up to ``shift`` rows (zero fill) and up to
    ``gap`` blank columns follow it; with both 0 the strip is exactly the images side by side
    (8 × 8L) and no further random numbers are drawn."""
    if not 1 <= lo <= hi:
        raise ValueError(f"min_digits/max_digits: expected 1 <= min <= max, got {lo}, {hi}")
    if not pool:
        raise ValueError("images: the split has no images to compose strips from")
    out = []
    lengths = torch.randint(lo, hi + 1, (n,), generator=g).tolist()
    for L in lengths:
        idx = [pool[k] for k in torch.randint(len(pool), (L,), generator=g).tolist()]
        parts = [images[i] for i in idx]
        if shift or gap:
            parts = [_jitter(p, g, shift, gap) for p in parts]
        out.append((torch.cat(parts, dim=1), [WORDS[int(labels[i])] for i in idx], idx))
    return out


def _jitter(image: Tensor, g: torch.Generator, shift: int, gap: int) -> Tensor:
    dy = int(torch.randint(-shift, shift + 1, (1,), generator=g))
    moved = torch.zeros_like(image)
    if dy >= 0:
        moved[dy:] = image[: 8 - dy]
    else:
        moved[:dy] = image[-dy:]
    blank = int(torch.randint(0, gap + 1, (1,), generator=g))
    return torch.cat([moved, image.new_zeros(8, blank)], dim=1)


def batch_strips(strips: list[Tensor]) -> tuple[Tensor, Tensor]:
    widths = torch.tensor([s.shape[1] for s in strips])
    x = torch.zeros(len(strips), 8, int(widths.max()))
    for k, s in enumerate(strips):
        x[k, :, : s.shape[1]] = s
    return x, widths


class StripBatches:
    """Fresh training strips each epoch: ``strips_per_epoch`` / ``batch_size`` batches."""

    def __init__(self, images, labels, pool, cfg: CaptionConfig, vocab: Vocab) -> None:
        self.args = images, labels, pool
        self.cfg, self.vocab, self.epoch = cfg, vocab, 0

    def __iter__(self):
        c = self.cfg
        g = torch.Generator().manual_seed(c.seed * 100_003 + self.epoch)
        self.epoch += 1
        for _ in range(max(1, c.strips_per_epoch // c.batch_size)):
            strips = compose(
                *self.args, c.batch_size, c.min_digits, c.max_digits, g, c.shift, c.gap
            )
            x, w = batch_strips([s for s, _, _ in strips])
            tgt, _ = pad_batch([self.vocab.encode(ws, bos=True, eos=True) for _, ws, _ in strips])
            yield x, w, tgt[:, :-1], tgt[:, 1:]


@torch.no_grad()
def caption(
    model: Captioner, vocab: Vocab, strips: list[Tensor], beam: int = 1, batch: int = 256
) -> list[list[str]]:
    out: list[list[str]] = []
    for i in range(0, len(strips), batch):
        x, w = batch_strips(strips[i : i + batch])
        state = model.start(x, w)
        bos = torch.full((x.shape[0],), BOS, dtype=torch.long)
        if beam > 1:
            found = beam_search(model, state, bos, MAX_WORDS + 1, beam, eos=EOS, pad=PAD)
        else:
            found = greedy(model, state, bos, MAX_WORDS + 1, eos=EOS, pad=PAD)
        out += [
            vocab.decode(row[:n])
            for row, n in zip(found.tokens.tolist(), found.lengths.tolist(), strict=True)
        ]
    return out


def scores(hyps: list[list[str]], refs: list[list[str]], lo: int, hi: int) -> dict[str, float]:
    """Exact match overall and for each strip length, and word error rate."""
    ok = [h == r for h, r in zip(hyps, refs, strict=True)]
    out = {"exact": sum(ok) / len(ok), "wer": error_rates(hyps, [[r] for r in refs])[0]}
    for L in range(lo, hi + 1):
        sel = [k for k, r in enumerate(refs) if len(r) == L]
        if sel:
            out[f"exact_len{L}"] = sum(ok[k] for k in sel) / len(sel)
    return out


def plot_caption_attention(strip: Tensor, words: list[str], alpha: Tensor, path, title: str):
    """Save :func:`caption_attention_figure` to ``path``."""
    fig = caption_attention_figure(strip, words, alpha, title)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def caption_attention_figure(strip: Tensor, words: list[str], alpha: Tensor, title: str):
    """The strip on top, the attention α (len(words), W) over its columns for each output word
    below."""
    fig, (a, b) = plt.subplots(
        2,
        1,
        figsize=(0.22 * strip.shape[1] + 1.5, 1.2 + 0.35 * len(words)),
        sharex=True,
        gridspec_kw={"height_ratios": [8, len(words) * 2]},
    )
    a.imshow(strip.tolist(), cmap="gray_r", aspect="auto")
    a.set_yticks([])
    a.set_title(title, fontsize=9)
    b.imshow(alpha.tolist(), cmap="viridis", aspect="auto", vmin=0)
    b.set_yticks(range(len(words)), words)
    b.set_xlabel("strip column")
    fig.tight_layout()
    return fig


class CaptionTask(Task):
    name = "caption"
    description = "image captioning, attention decoder over image columns (exact match)"
    dataset = "digits"
    Config = CaptionConfig
    metric = "val_exact"
    higher_is_better = True
    other_models = ()  # recurrent cells only

    def build(self, cfg: CaptionConfig, vocab_size: int) -> Captioner:
        model = Captioner(cfg, vocab_size)
        init_forget_bias(model)
        return model

    @staticmethod
    def vocab() -> Vocab:
        return Vocab(WORDS)

    def data(self, cfg: CaptionConfig):
        """(images, labels, [train, valid, test] pools, valid strips, test strips)."""
        images, labels = digits()
        if cfg.limit:
            images, labels = images[: cfg.limit], labels[: cfg.limit]
        pools = split_images(len(images), cfg.seed)
        g = torch.Generator().manual_seed(cfg.seed + 1)
        lo, hi = cfg.min_digits, cfg.max_digits
        valid = compose(images, labels, pools[1], cfg.valid_strips, lo, hi, g)
        test = compose(images, labels, pools[2], cfg.test_strips, lo, hi, g)
        return images, labels, pools, valid, test

    def _test(self, model, vocab, test, cfg: CaptionConfig) -> dict[str, Any]:
        strips, refs = [s for s, _, _ in test], [r for _, r, _ in test]
        out = {
            f"test_{k}": v
            for k, v in scores(
                caption(model, vocab, strips), refs, cfg.min_digits, cfg.max_digits
            ).items()
        }
        if cfg.beam > 1:
            beam = scores(
                caption(model, vocab, strips, cfg.beam), refs, cfg.min_digits, cfg.max_digits
            )
            out[f"test_beam{cfg.beam}_exact"] = beam["exact"]
        out["test_strips"] = len(test)
        return out

    def train(self, cfg: CaptionConfig, run: RunDir, progress=None) -> dict[str, Any]:
        self.setup(cfg)
        with phase(progress, "data", self.data_name(cfg)) as info:
            images, labels, pools, valid, test = self.data(cfg)
            info.detail = (
                f"{len(pools[0]):,}/{len(pools[1]):,}/{len(pools[2]):,} train/valid/test images"
            )
        native_build(progress, cfg.impl, cfg.model)
        vocab = self.vocab()
        model = self.build(cfg, len(vocab))
        meta = {"task": self.name, "vocab": vocab.to_list(), "config": config_dict(cfg)}
        run.log(
            kind="info",
            train_images=len(pools[0]),
            valid_images=len(pools[1]),
            test_images=len(pools[2]),
            parameters=count_parameters(model),
        )

        def loss_fn(model, batch):
            x, w, tgt_in, tgt_out = batch
            logits, _ = model(x, w, tgt_in)
            return F.cross_entropy(
                logits.reshape(-1, logits.size(-1)), tgt_out.reshape(-1), ignore_index=PAD
            )

        def evaluate():
            hyps = caption(model, vocab, [s for s, _, _ in valid])
            got = scores(hyps, [r for _, r, _ in valid], cfg.min_digits, cfg.max_digits)
            return {"val_exact": got["exact"], "val_wer": got["wer"]}

        probe = _span_norms(valid, vocab)
        span = memory_span_callback(cfg, run, progress, probe)
        result = fit(
            model,
            cfg,
            StripBatches(images, labels, pools[0], cfg, vocab),
            loss_fn,
            evaluate,
            self.metric,
            True,
            run,
            on_best=lambda: run.save_model(model, meta),
            progress=progress,
            callbacks=[span] if span is not None else None,
        )
        with phase(progress, "evaluation", f"{len(test):,} test strips"):
            model.load_state_dict(run.load_model_files()[0])
            model.eval()
            test_scores = self._test(model, vocab, test, cfg)
            hyps = caption(model, vocab, [s for s, _, _ in test[:8]])
        summary = {
            "task": self.name,
            "model": cfg.model,
            "feedback": cfg.feedback,
            **test_scores,
            "val_exact": result.best.get("val_exact"),
            "steps": result.steps,
            "train_seconds": round(result.seconds, 1),
            "train_cpu_seconds": round(result.cpu_seconds, 1),
            "clock": cfg.clock,
            "stopped_by": result.stopped_by,
            "parameters": count_parameters(model),
            "examples": [
                f"{' '.join(r)} -> {' '.join(h)}"
                for (_, r, _), h in zip(test[:8], hyps, strict=True)
            ],
        }
        record_memory_span(span, summary)
        run.write_summary(summary)
        with phase(progress, "plots"):
            plot_memory_span(span, run, cfg.model)
            self._plots(cfg, run, model, vocab, test)
            plot_probe_grads(
                probe,
                model,
                run,
                f"{cfg.model}: ‖∂ℓ/∂s_t‖ of the last token's loss at each decoder step\n"
                "longest validation strip, teacher-forced",
            )
        return summary

    def _plots(self, cfg: CaptionConfig, run: RunDir, model: Captioner, vocab: Vocab, test):
        plot_losses(
            run.events(),
            "val_exact",
            run.path / "loss.png",
            f"{self.name} ({cfg.model}, feedback={cfg.feedback}): loss, exact match",
            higher_is_better=True,
        )
        if test:
            strip, ref, _ = max(test[:50], key=lambda s: len(s[1]))
            x, w = batch_strips([strip])
            tgt = torch.tensor([vocab.encode(ref, bos=True, eos=True)])
            with torch.no_grad():
                alpha = model(x, w, tgt[:, :-1])[1][0]
            plot_caption_attention(
                strip,
                [*ref, "<eos>"],
                alpha,
                run.path / "attention.png",
                f"attention over the columns while writing '{' '.join(ref)}'",
            )

    def load(self, run: RunDir):
        weights, meta = run.load_model_files()
        cfg = load_config(CaptionConfig, run)
        vocab = Vocab.from_list(meta["vocab"])
        model = self.build(cfg, len(vocab))
        model.load_state_dict(weights)
        model.eval()
        return model, vocab, cfg

    def evaluate(self, run: RunDir, progress=None) -> dict[str, Any]:
        model, vocab, cfg = self.load(run)
        torch.set_num_threads(max(1, cfg.threads))
        *_, test = self.data(cfg)
        return self._test(model, vocab, test, cfg)

    def predict(self, run: RunDir, inputs: list[str], beam: int = 1, **_: Any) -> list[str]:
        """Each input is a string of digits, e.g. ``"729"``: a strip is composed from held-out
        TEST images of those digits (seeded by the input) and captioned. One line per input:
        ``digits<TAB>caption<TAB>test image indices``."""
        if not inputs:
            raise ValueError("inputs: give at least one string of digits, e.g. 729")
        model, vocab, cfg = self.load(run)
        strips, used = zip(*(self.held_out_strip(text, cfg) for text in inputs), strict=True)
        hyps = caption(model, vocab, list(strips), beam)
        return [
            f"{t}\t{' '.join(h)}\t{','.join(map(str, i))}"
            for t, h, i in zip(inputs, hyps, used, strict=True)
        ]

    @staticmethod
    def held_out_strip(text: str, cfg: CaptionConfig) -> tuple[Tensor, list[int]]:
        """The strip (8, 8·len(text)) of held-out TEST images showing the digits of ``text``
        (images drawn with a generator seeded by the digits), and the image indices."""
        if not text.isdigit() or not 1 <= len(text) <= MAX_WORDS:
            raise ValueError(f"inputs: expected 1-8 digits like 729, got {text!r}")
        images, labels = digits()
        test_pool = split_images(len(images) if not cfg.limit else cfg.limit, cfg.seed)[2]
        g = torch.Generator().manual_seed(int(text))
        idx = []
        for ch in text:
            choices = [i for i in test_pool if int(labels[i]) == int(ch)]
            if not choices:
                raise ValueError(f"inputs: no held-out image of digit {ch} in this split")
            idx.append(choices[int(torch.randint(len(choices), (1,), generator=g))])
        return torch.cat([images[i] for i in idx], dim=1), idx


def _span_norms(valid: list, vocab: Vocab):
    """``norms(model)`` for the memory span: ‖∂ℓ/∂s_t‖ over the decoder's steps (its top
    hidden state s_t) for the longest of the first 200 validation strips, teacher-forced,
    ℓ the loss of the caption's last token (<eos>)."""
    if not valid:
        return None
    strip, words, _ = max(valid[:200], key=lambda item: len(item[1]))
    x, w = batch_strips([strip])
    tgt = torch.tensor([vocab.encode(words, bos=True, eos=True)])

    def norms(model: Captioner) -> list[float]:
        state = model.start(x.to(model.out.weight.dtype), w)
        outputs = []
        for t in range(tgt.shape[1] - 1):
            logits, state = model.step(tgt[:, t], state)
            # s_t is the top cell's h itself: the readout reads it and the next step's state
            # stacks it, so the gradient w.r.t. it is the total ∂ℓ/∂s_t through both
            outputs.append(model.last_output)
        loss = F.cross_entropy(logits, tgt[:, -1])
        return [float(g.norm()) for g in torch.autograd.grad(loss, outputs)]

    return norms
