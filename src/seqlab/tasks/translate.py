"""Task ``translate``: any tab-separated ``source<TAB>target`` pairs (the user's corpus).

No bilingual corpus ships in a PyPI wheel (see ../shared/DATASETS.md), so this task has no
bundled data: ``seqlab train translate --data pairs.tsv``. Tokens: ``src_tokens`` /
``tgt_tokens`` = ``words`` (split at whitespace, case kept, punctuation stays attached, so
pre-tokenise the file if you want it separate) or ``chars``. Pairs with the same source are one
item with several references. Split by source with a seeded shuffle: 90 % train, 5 %
validation (checkpoint choice by BLEU), 5 % test. Metric: corpus BLEU-4 of greedy (or
``beam``-search) output against all references (:func:`seqlab.metrics.bleu`, Papineni et al.
2002: clipped n-gram precisions, brevity penalty), plus exact match and token error rate.
Baseline on the same test items: copying the source (BLEU of the source read as targets),
which is what a model that learnt nothing but the identity would score. The model, decoding,
plots and everything else are the ``g2p`` task's (:class:`seqlab.tasks.g2p.G2PTask`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from seqlab.data import PAD, Vocab, pad_batch
from seqlab.metrics import bleu
from seqlab.tasks.base import config_dict, count_parameters, fit, load_config
from seqlab.tasks.batches import ShuffledBatches
from seqlab.tasks.g2p import G2PConfig, G2PTask, _tokens, error_rates, load_groups, split_groups
from seqlab.tasks.plots import plot_losses
from seqlab.tasks.rundir import RunDir


@dataclass
class TranslateConfig(G2PConfig):
    src_tokens: str = "words"  # words (whitespace-separated) | chars
    tgt_tokens: str = "words"  # words | chars, for the target side
    beam: int = 1  # beam size for the final test decoding (validation is greedy)
    max_len: int = 60  # longest target decoded, in tokens
    eval_words: int = 500  # validation sentences decoded at each periodic evaluation
    clock: str = "cpu"  # the budget counts this process's CPU time (fair on a shared machine)
    threads: int = 1


def _join(tokens: list[str], how: str) -> str:
    return "".join(tokens) if how == "chars" else " ".join(tokens)


def scores(hyps: list[list[str]], refs: list[list[list[str]]]) -> dict[str, float]:
    """BLEU-4, exact match (a hypothesis equal to one of its references) and token error rate."""
    ter, wrong = error_rates(hyps, refs)
    return {"bleu": bleu(hyps, refs), "exact": 1.0 - wrong, "token_error_rate": ter}


class TranslateTask(G2PTask):
    name = "translate"
    description = "translation of source/target pairs, attention encoder-decoder (BLEU)"
    dataset = "pairs"  # no bundled corpus: --data FILE.tsv is required
    Config = TranslateConfig
    metric = "val_bleu"
    higher_is_better = True

    def _items(self, cfg: TranslateConfig):
        if not cfg.data:
            raise ValueError(
                "data: translate needs your own corpus, e.g. --data pairs.tsv "
                "(source<TAB>target per line); no bilingual corpus ships with seqlab"
            )
        if cfg.beam < 1:
            raise ValueError(f"beam: expected a size >= 1, got {cfg.beam}")
        items = load_groups(cfg)
        if len(items) < 3:
            raise ValueError(
                f"data: expected at least 3 distinct source lines (train/validation/test), "
                f"got {len(items)} in {cfg.data}"
            )
        return split_groups(items, cfg.seed)

    def train(self, cfg: TranslateConfig, run: RunDir, progress=None) -> dict[str, Any]:
        self.setup(cfg)
        train_g, valid_g, test_g = self._items(cfg)
        pairs = [(s, t) for s, ts in train_g for t in ts]
        src_vocab = Vocab.build([s for s, _ in pairs])
        tgt_vocab = Vocab.build([t for _, t in pairs])
        xs = [src_vocab.encode(s) for s, _ in pairs]
        ys = [tgt_vocab.encode(t, bos=True, eos=True) for _, t in pairs]
        model = self.build(cfg, len(src_vocab), len(tgt_vocab))
        meta = {
            "task": self.name,
            "src_vocab": src_vocab.to_list(),
            "tgt_vocab": tgt_vocab.to_list(),
            "config": config_dict(cfg),
        }
        run.log(
            kind="info",
            train_pairs=len(pairs),
            valid_items=len(valid_g),
            test_items=len(test_g),
            parameters=count_parameters(model),
        )
        eval_g = valid_g[: cfg.eval_words] if cfg.eval_words else valid_g

        def collate(idx):
            src, src_len = pad_batch([xs[i] for i in idx])
            tgt, _ = pad_batch([ys[i] for i in idx])
            return src, src_len, tgt[:, :-1], tgt[:, 1:]

        def loss_fn(model, batch):
            src, src_len, tgt_in, tgt_out = batch
            logits = self.logits(model, src, src_len, tgt_in)
            return F.cross_entropy(
                logits.reshape(-1, logits.size(-1)), tgt_out.reshape(-1), ignore_index=PAD
            )

        def evaluate():
            hyps = self.transcribe(model, src_vocab, tgt_vocab, [s for s, _ in eval_g], cfg.max_len)
            return {f"val_{k}": v for k, v in scores(hyps, [r for _, r in eval_g]).items()}

        result = fit(
            model,
            cfg,
            ShuffledBatches(len(xs), cfg.batch_size, cfg.seed, collate),
            loss_fn,
            evaluate,
            self.metric,
            True,
            run,
            on_best=lambda: run.save_model(model, meta),
            progress=progress,
            epochs=cfg.epochs,
        )
        model.load_state_dict(run.load_model_files()[0])
        model.eval()
        test = self._test(model, src_vocab, tgt_vocab, test_g, cfg)
        hyps = test.pop("_hyps")
        summary = {
            "task": self.name,
            "model": cfg.model,
            "attention": cfg.attention,
            **test,
            "val_bleu": result.best.get("val_bleu"),
            "steps": result.steps,
            "train_seconds": round(result.seconds, 1),
            "train_cpu_seconds": round(result.cpu_seconds, 1),
            "clock": cfg.clock,
            "stopped_by": result.stopped_by,
            "parameters": count_parameters(model),
            "examples": [
                f"{_join(s, cfg.src_tokens)} -> {_join(h, cfg.tgt_tokens)}"
                for (s, _), h in zip(test_g[:8], hyps, strict=False)
            ],
        }
        run.write_summary(summary)
        plot_losses(
            run.events(),
            "val_bleu",
            run.path / "loss.png",
            f"{self.name} ({cfg.model}, attention={cfg.attention}): loss and BLEU",
        )
        if test_g and cfg.model != "transformer":
            self._diagnostics(model, src_vocab, tgt_vocab, test_g, cfg, run)
        return summary

    def _test(self, model, src_vocab, tgt_vocab, test_g, cfg: TranslateConfig) -> dict[str, Any]:
        srcs, refs = [s for s, _ in test_g], [r for _, r in test_g]
        hyps = self.transcribe(model, src_vocab, tgt_vocab, srcs, cfg.max_len, beam=cfg.beam)
        out = {f"test_{k}": v for k, v in scores(hyps, refs).items()}
        out["test_items"] = len(test_g)
        out["beam"] = cfg.beam
        # Copying the source scores > 0 only where source and target share tokens.
        out["baseline_copy_bleu"] = bleu(srcs, refs)
        out["_hyps"] = hyps
        return out

    def load(self, run: RunDir):
        weights, meta = run.load_model_files()
        cfg = load_config(TranslateConfig, run)
        src_vocab = Vocab.from_list(meta["src_vocab"])
        tgt_vocab = Vocab.from_list(meta["tgt_vocab"])
        model = self.build(cfg, len(src_vocab), len(tgt_vocab))
        model.load_state_dict(weights)
        model.eval()
        return model, src_vocab, tgt_vocab, cfg

    def evaluate(self, run: RunDir, progress=None) -> dict[str, Any]:
        model, src_vocab, tgt_vocab, cfg = self.load(run)
        torch.set_num_threads(max(1, cfg.threads))
        _, _, test_g = self._items(cfg)
        out = self._test(model, src_vocab, tgt_vocab, test_g, cfg)
        out.pop("_hyps")
        return out

    def predict(self, run: RunDir, inputs: list[str], beam: int = 1, **_: Any) -> list[str]:
        if not inputs:
            raise ValueError("inputs: give at least one source sentence (or --file)")
        model, src_vocab, tgt_vocab, cfg = self.load(run)
        srcs = [_tokens(s, cfg.src_tokens) for s in inputs]
        hyps = self.transcribe(model, src_vocab, tgt_vocab, srcs, cfg.max_len, beam=beam)
        return [f"{s}\t{_join(h, cfg.tgt_tokens)}" for s, h in zip(inputs, hyps, strict=True)]
