"""Synchronised many-to-many: one output per input step through a per-step head.

    x_t = Emb(token_t) or the dense vector;  o_t = RNN(x)_t;  y_t = W o_t + b  (every t)

``causal=True`` (next-token prediction, streaming) forbids a bidirectional encoder, since
o_t must depend on x_1..x_t only; labelling tasks (per-frame classes, per-word error flags)
may read both directions.

=========  ===============  ==============================
name       shape            meaning
=========  ===============  ==============================
inputs     (B, T) / (B,T,I) token ids or dense features
lengths    (B,)             valid steps
output     (B, T, C)        per-step logits (0 at padding)
=========  ===============  ==============================

Batch convention for ``loss``: ``inputs``, ``targets`` (B, T) ids, optional ``lengths``;
the mean per-step cross-entropy over valid steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from seqlab.losses import sequence_cross_entropy
from seqlab.models._checks import check_positive
from seqlab.models.classifier import embed_or_check
from seqlab.models.encoders import RecurrentEncoder, State
from seqlab.sizes import check_sizes
from seqlab.validation import check_lengths


@dataclass
class TaggerConfig:
    num_tags: int
    vocab_size: int | None = None
    input_size: int | None = None
    embed_size: int = 32
    hidden_size: int = 64
    num_layers: int = 1
    cell: str = "gru"
    bidirectional: bool = False
    causal: bool = True
    dropout: float = 0.0
    pad_id: int = 0
    # per-sequence masks inside each recurrent layer (seqlab.functional.regularisers)
    input_dropout: float = 0.0
    recurrent_dropout: float = 0.0
    weight_dropout: float = 0.0


class SequenceTagger(nn.Module):
    """Synchronised many-to-many: one output per input step, ``y_t = W o_t + b``.

    ``forward(inputs (B, T) or (B, T, I), lengths (B,) | None) -> (B, T, C)`` (0 at padding).
    ``causal=True`` forbids a bidirectional encoder (o_t may only read x_1..x_t). Settings:
    :class:`TaggerConfig`.
    """

    def __init__(self, config: TaggerConfig) -> None:
        super().__init__()
        c = self.config = config
        check_sizes(c, ("num_tags", "embed_size", "hidden_size", "num_layers"),
                    ("vocab_size", "input_size"))  # fmt: skip
        check_positive("num_tags", c.num_tags)
        if c.causal and c.bidirectional:
            raise ValueError("bidirectional=True reads the future; set causal=False to allow it")
        if (c.vocab_size is None) == (c.input_size is None):
            raise ValueError(
                "give exactly one of vocab_size (token input) or input_size (dense input), "
                f"got vocab_size={c.vocab_size}, input_size={c.input_size}"
            )
        in_size = c.input_size
        if c.vocab_size is not None:
            self.embed = nn.Embedding(c.vocab_size, c.embed_size, padding_idx=c.pad_id)
            in_size = c.embed_size
        self.encoder = RecurrentEncoder(
            c.cell,
            in_size,
            c.hidden_size,
            c.num_layers,
            c.bidirectional,
            c.dropout,
            input_dropout=c.input_dropout,
            recurrent_dropout=c.recurrent_dropout,
            weight_dropout=c.weight_dropout,
        )
        self.drop = nn.Dropout(c.dropout)
        # The TimeDistributed dense layer: nn.Linear acts on the last dim of (B, T, R).
        self.head = nn.Linear(self.encoder.output_size, c.num_tags)

    def forward(
        self,
        inputs: Tensor,
        lengths: Tensor | None = None,
        state: State | None = None,
        trace: bool = False,
    ):
        """Per-step logits (B, T, C); with ``trace=True`` ``(logits, traces)`` (see
        :class:`seqlab.inspection.Probe`)."""
        if trace:  # every step's gates and states, (B, T, H) per layer·direction
            from seqlab.inspection.probe import trace_model

            return trace_model(self, inputs, lengths, state)
        c = self.config
        x = embed_or_check(self, inputs, c.vocab_size, c.input_size)
        lengths = check_lengths(lengths, x.shape[0], x.shape[1], name="lengths")
        out, self.final_state = self.encoder(self.drop(x), lengths, state)
        logits = self.head(self.drop(out))
        if lengths is not None:  # padded steps: exactly 0 so nothing leaks into metrics
            steps = torch.arange(x.shape[1], device=x.device)
            valid = (lengths.unsqueeze(1) > steps.unsqueeze(0)).unsqueeze(-1)
            logits = logits * valid
        return logits

    def loss(self, batch: dict) -> Tensor:
        logits = self(batch["inputs"], batch.get("lengths"))
        return sequence_cross_entropy(logits, batch["targets"], batch.get("lengths"))
