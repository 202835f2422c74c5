"""Encoder-decoder attention for the recurrent Seq2Seq: Bahdanau (additive), Luong dot/general.

Shapes: ``B`` batch, ``S`` source steps, ``Q`` query (decoder state) size, ``M`` memory
(encoder output) size, ``A`` attention size.

=========  ==========  ===========================================
name       shape       meaning
=========  ==========  ===========================================
query      (B, Q)      decoder state s (Bahdanau: s_{t−1}; Luong: h_t)
memory     (B, S, M)   encoder outputs m_1..m_S
keys       (B, S, ·)   ``prepare(memory)``: the query-independent part, computed once
mask       (B, S)      True at valid source positions
weights    (B, S)      a_{t,j} = softmax_j(e_{t,j}); exactly 0 where mask is False
context    (B, M)      c_t = Σ_j a_{t,j} m_j
=========  ==========  ===========================================

Scores e_{t,j}:
- additive (Bahdanau et al. 2015): e = vᵀ tanh(W_q q + W_m m_j), keys = W_m m (B, S, A);
- dot (Luong et al. 2015): e = qᵀ m_j, needs Q = M; keys = memory;
- general (Luong): e = qᵀ W m_j, keys = m W ᵀ (B, S, Q).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seqlab.models._checks import check_choice

ATTENTIONS = ("none", "additive", "dot", "general")


def masked_softmax(scores: Tensor, mask: Tensor | None) -> Tensor:
    """softmax over the last dim with masked-out entries exactly 0 (each row needs ≥ 1 valid)."""
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))  # exp(−inf) = 0 exactly
    return torch.softmax(scores, dim=-1)


class Attention(nn.Module):
    """Scores ``query`` against ``memory``; see the module docstring for the three forms."""

    def __init__(self, kind: str, query_size: int, memory_size: int, attn_size: int | None = None):
        super().__init__()
        check_choice("attention", kind, ATTENTIONS[1:])
        if kind == "dot" and query_size != memory_size:
            raise ValueError(
                "dot attention needs decoder hidden size == encoder output size (D·H): "
                f"got decoder_hidden_size={query_size}, encoder output size={memory_size}; "
                "use attention='general' or 'additive', or match the sizes"
            )
        self.kind = kind
        if kind == "additive":
            attn_size = attn_size or query_size
            self.w_q = nn.Linear(query_size, attn_size, bias=False)
            self.w_m = nn.Linear(memory_size, attn_size, bias=True)
            self.v = nn.Linear(attn_size, 1, bias=False)
        elif kind == "general":
            self.w = nn.Linear(memory_size, query_size, bias=False)

    def prepare(self, memory: Tensor) -> Tensor:
        """The query-independent keys (computed once per source batch)."""
        if self.kind == "additive":
            return self.w_m(memory)
        if self.kind == "general":
            return self.w(memory)
        return memory

    def forward(
        self, query: Tensor, keys: Tensor, memory: Tensor, mask: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        if self.kind == "additive":
            e = self.v(torch.tanh(keys + self.w_q(query).unsqueeze(1))).squeeze(-1)  # (B, S)
        else:
            e = torch.bmm(keys, query.unsqueeze(-1)).squeeze(-1)  # (B, S)
        weights = masked_softmax(e, mask)
        context = torch.bmm(weights.unsqueeze(1), memory).squeeze(1)  # (B, M)
        return context, weights
