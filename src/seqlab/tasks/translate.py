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

from seqlab.data import Vocab
from seqlab.metrics import bleu
from seqlab.tasks.base import load_config
from seqlab.tasks.g2p import G2PConfig, G2PTask, _tokens, error_rates, load_groups, split_groups
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
    unit = "item"
    src_unit, tgt_unit = "source token", "target token"
    plot_metric_label = "validation BLEU-4"
    plot_loss_label = "training cross-entropy (nats/token)"

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

    def _scores(self, hyps: list[list[str]], refs: list[list[list[str]]]) -> dict[str, float]:
        return scores(hyps, refs)

    def _example(self, src: list[str], hyp: list[str], cfg: TranslateConfig) -> str:
        return f"{_join(src, cfg.src_tokens)} -> {_join(hyp, cfg.tgt_tokens)}"

    def _source_text(self, src: list[str], cfg: TranslateConfig) -> str:
        return _join(src, cfg.src_tokens)

    def _valid_baselines(self, eval_g, cfg: TranslateConfig) -> dict[str, float]:
        """Copying the source, scored as the validation BLEU is (same items, all references)."""
        if not eval_g:
            return {}
        return {"copy source": bleu([s for s, _ in eval_g], [r for _, r in eval_g])}

    def _test(self, model, src_vocab, tgt_vocab, test_g, cfg: TranslateConfig) -> dict[str, Any]:
        srcs, refs = [s for s, _ in test_g], [r for _, r in test_g]
        hyps = self.transcribe(model, src_vocab, tgt_vocab, srcs, cfg.max_len, beam=cfg.beam)
        out: dict[str, Any] = {f"test_{k}": v for k, v in scores(hyps, refs).items()}
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

    def predict(self, run: RunDir, inputs: list[str], beam: int = 1, **_: Any) -> list[str]:
        if not inputs:
            raise ValueError("inputs: give at least one source sentence (or --file)")
        model, src_vocab, tgt_vocab, cfg = self.load(run)
        srcs = [_tokens(s, cfg.src_tokens) for s in inputs]
        hyps = self.transcribe(model, src_vocab, tgt_vocab, srcs, cfg.max_len, beam=beam)
        return [f"{s}\t{_join(h, cfg.tgt_tokens)}" for s, h in zip(inputs, hyps, strict=True)]
