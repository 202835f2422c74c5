"""Many-to-one models: a sequence in, one output out (classification or regression).

    x_t = Emb(token_t) or the dense vector;  o_1..o_T = RNN(x);  r = pool(o, lengths);
    y = W_head r + b   (logits for softmax/sigmoid heads, values for the linear head)

Pooling over the T_b valid steps of row b (D directions, H hidden, D·H = R):

- ``last``: the top layer's final state(s), directions concatenated (forward: h at step
  T_b; backward: after reading the whole row);
- ``mean``: (1/T_b) Σ_{t<T_b} o_t;   ``max``: max_{t<T_b} o_t (element-wise);
- ``attention``: a_t = softmax_t(vᵀ tanh(W o_t)) over valid t, r = Σ_t a_t o_t.

``cell="transformer"`` swaps the recurrent stack for
:class:`seqlab.transformer.SequenceEncoder` (``nhead`` heads, ``max_len`` positions,
``causal`` attention); ``last`` then reads o at step T_b (no recurrent final state).
Dropout (``dropout``) is applied to the inputs, between recurrent layers and to r;
``attn_dropout`` (default: ``dropout``) is the Transformer's internal dropout.
``impl="torch"`` builds the recurrent stack from torch.nn (see ``make_recurrent``).

``ngram_buckets`` = K > 0 (token input only) adds a linear bag of n-grams straight to the
logits, a learned naive-Bayes-like term next to the recurrent path (the fastText idea):

    y += Σ_{t<T_b} U[w_t] + Σ_{1≤t<T_b} U[V + ((w_{t-1}·1000003 + w_t) mod K)]

U (V + K, C) starts at zero, so the model starts as the plain recurrent classifier.

=========  ===============  ==================================
name       shape            meaning
=========  ===============  ==================================
inputs     (B, T) / (B,T,I) token ids or dense features
lengths    (B,)             valid steps
output     (B, C)           logits or regression values
=========  ===============  ==================================

Batch convention for ``loss``: ``inputs``, optional ``lengths``, ``targets``: (B,) class ids
(softmax), (B, C) 0/1 floats (sigmoid), (B, C) or (B,) values with C = 1 (linear, MSE).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.functional.regularisers import NAMES as REGULARISERS
from seqlab.models._checks import (
    check_choice,
    check_features,
    check_positive,
    check_tokens,
)
from seqlab.models.attention import masked_softmax
from seqlab.models.encoders import RecurrentEncoder, top_hidden
from seqlab.sizes import check_sizes
from seqlab.transformer.sequence import SequenceEncoder
from seqlab.validation import check_lengths

POOLINGS = ("last", "mean", "max", "attention")
HEADS = ("softmax", "sigmoid", "linear")


@dataclass
class ClassifierConfig:
    num_classes: int  # C (output size for the linear head)
    vocab_size: int | None = None  # token input when set ...
    input_size: int | None = None  # ... dense input (B, T, I) otherwise
    embed_size: int = 32
    hidden_size: int = 64
    num_layers: int = 1
    cell: str = "lstm"
    bidirectional: bool = False
    pooling: str = "last"
    head: str = "softmax"
    dropout: float = 0.0
    pad_id: int = 0
    impl: str = "seqlab"  # recurrent stack: seqlab | torch
    nhead: int = 4  # cell="transformer" only
    max_len: int = 512  # cell="transformer" only
    causal: bool = False  # cell="transformer" only
    attn_dropout: float | None = None  # cell="transformer" only (None: dropout)
    ngram_buckets: int = 0  # K > 0: add the bag of unigrams + K hashed bigram slots (tokens)
    # recurrent cells only: per-sequence masks inside each layer (seqlab.functional.regularisers)
    input_dropout: float = 0.0
    recurrent_dropout: float = 0.0
    weight_dropout: float = 0.0


def embed_or_check(module: nn.Module, inputs: Tensor, vocab: int | None, size: int | None):
    """Shared input path: token ids through ``module.embed`` or checked dense features."""
    if vocab is not None:
        return module.embed(check_tokens("inputs", inputs, vocab))
    return check_features("inputs", inputs, size)


class SequenceClassifier(nn.Module):
    """Many-to-one: a sequence in, one output out (classification or regression).

    ``y = W_head pool(RNN(Emb(tokens)), lengths) + b`` — the pooling (``last``, ``mean``,
    ``max``, ``attention``), the recurrent or Transformer encoder and the optional bag of
    n-grams are set by :class:`ClassifierConfig`; the equations are in the module docstring
    (``help(seqlab.models.classifier)``). ``forward(inputs (B, T) or (B, T, I), lengths (B,)
    | None) -> (B, C)``; ``loss(batch)`` for :class:`seqlab.training.Trainer`.
    """

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        c = self.config = config
        check_sizes(c, ("num_classes", "embed_size", "hidden_size", "num_layers", "nhead",
                        "max_len"), ("vocab_size", "input_size"))  # fmt: skip
        check_choice("pooling", c.pooling, POOLINGS)
        check_choice("head", c.head, HEADS)
        check_positive("num_classes", c.num_classes)
        if (c.vocab_size is None) == (c.input_size is None):
            raise ValueError(
                "give exactly one of vocab_size (token input) or input_size (dense input), "
                f"got vocab_size={c.vocab_size}, input_size={c.input_size}"
            )
        in_size = c.input_size
        if c.vocab_size is not None:
            self.embed = nn.Embedding(c.vocab_size, c.embed_size, padding_idx=c.pad_id)
            in_size = c.embed_size
        regularisers = {k: getattr(c, k) for k in REGULARISERS}
        if c.cell == "transformer":
            if c.bidirectional:
                raise ValueError("bidirectional: not applicable to cell='transformer'")
            for name, p in regularisers.items():
                if p:
                    raise ValueError(f"{name}: not applicable to cell='transformer'")
            drop = c.dropout if c.attn_dropout is None else c.attn_dropout
            self.encoder: nn.Module = SequenceEncoder(
                in_size, c.hidden_size, c.nhead, c.num_layers, drop, c.max_len, c.causal
            )
        else:
            self.encoder = RecurrentEncoder(
                c.cell,
                in_size,
                c.hidden_size,
                c.num_layers,
                c.bidirectional,
                c.dropout,
                c.impl,
                **regularisers,
            )
        R = self.encoder.output_size
        if c.pooling == "attention":
            self.attn_w = nn.Linear(R, R)
            self.attn_v = nn.Linear(R, 1, bias=False)
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(R, c.num_classes)
        self.ngrams: nn.Embedding | None = None
        if c.ngram_buckets:
            check_positive("ngram_buckets", c.ngram_buckets)
            if c.vocab_size is None:
                raise ValueError("ngram_buckets: needs token input (vocab_size), got dense input")
            self.ngrams = nn.Embedding(c.vocab_size + c.ngram_buckets, c.num_classes)
            nn.init.zeros_(self.ngrams.weight)

    def encode(self, inputs: Tensor, lengths: Tensor | None = None) -> Tensor:
        """The pooled representation r (B, D·H)."""
        c = self.config
        x = embed_or_check(self, inputs, c.vocab_size, c.input_size)
        B, T = x.shape[:2]
        lengths = check_lengths(lengths, B, T, name="lengths")
        out, final = self.encoder(self.drop(x), lengths)  # (B, T, R)
        if c.pooling == "last":
            if final is None:  # Transformer encoder: the output at the last valid step
                return self.encoder.last(out, lengths)
            return top_hidden(final, self.encoder.directions)
        steps = torch.arange(T, device=x.device).unsqueeze(0)
        valid = steps < (lengths.unsqueeze(1) if lengths is not None else T)  # (B, T)
        if c.pooling == "mean":
            return out.sum(1) / valid.sum(1, keepdim=True).to(out.dtype)  # padded outs are 0
        if c.pooling == "max":
            return out.masked_fill(~valid.unsqueeze(-1), float("-inf")).amax(1)
        scores = self.attn_v(torch.tanh(self.attn_w(out))).squeeze(-1)  # (B, T)
        self.last_attention = masked_softmax(scores, valid)
        return torch.bmm(self.last_attention.unsqueeze(1), out).squeeze(1)

    def forward(self, inputs: Tensor, lengths: Tensor | None = None, trace: bool = False):
        """Logits (B, C); with ``trace=True`` also the recurrent traces (see
        :class:`seqlab.inspection.Probe`): ``(logits, {"encoder": [trace per layer·dir]})``."""
        if trace:  # every step's gates and states, (B, T, H) per layer·direction
            from seqlab.inspection.probe import trace_model

            return trace_model(self, inputs, lengths)
        out = self.head(self.drop(self.encode(inputs, lengths)))
        if self.ngrams is not None:
            out = out + self.ngram_scores(inputs, lengths)
        return out

    def ngram_scores(self, ids: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Σ over each row's valid unigrams and hashed bigrams of their class scores: (B, C)."""
        V, K = self.config.vocab_size, self.config.ngram_buckets
        B, T = ids.shape
        steps = torch.arange(T, device=ids.device).unsqueeze(0)
        valid = steps < (lengths.unsqueeze(1) if lengths is not None else T)  # (B, T)
        pairs = V + (ids[:, :-1] * 1_000_003 + ids[:, 1:]) % K  # (B, T-1)
        keys = torch.cat([ids, pairs], 1)
        mask = torch.cat([valid, valid[:, 1:]], 1).unsqueeze(-1)  # a pair ends at a valid step
        return (self.ngrams(keys) * mask).sum(1)

    def loss(self, batch: dict) -> Tensor:
        out = self(batch["inputs"], batch.get("lengths"))
        y = batch["targets"]
        if self.config.head == "softmax":
            return F.cross_entropy(out, y)
        if self.config.head == "sigmoid":
            return F.binary_cross_entropy_with_logits(out, y.to(out.dtype).view_as(out))
        return F.mse_loss(out, y.to(out.dtype).view_as(out))

    @torch.no_grad()
    def predict(self, inputs: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Class ids (softmax), 0/1 labels (sigmoid) or values (linear)."""
        out = self(inputs, lengths)
        if self.config.head == "softmax":
            return out.argmax(-1)
        if self.config.head == "sigmoid":
            return (out > 0).long()
        return out


class SequenceRegressor(SequenceClassifier):
    """Many-to-one regression (e.g. forecasting the next value(s) of a series): dense input
    (B, T, I) -> values (B, output_size), trained with MSE."""

    def __init__(self, input_size: int, output_size: int = 1, **kwargs) -> None:
        kwargs.setdefault("pooling", "last")
        super().__init__(
            ClassifierConfig(
                num_classes=output_size, input_size=input_size, head="linear", **kwargs
            )
        )
