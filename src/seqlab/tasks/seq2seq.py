"""Encoder-decoder with optional attention (Luong et al. 2015, global attention).

Encoder: embeddings -> bidirectional recurrent stack; ``m_s`` (B, S, H) is the concatenation
of both directions. Decoder: embeddings of the previous target token -> recurrent stack whose
initial state is the encoder's final state (directions concatenated), giving ``h_t`` (B, T, H).

Attention ("dot": ``e_ts = h_tᵀ m_s``; "general": ``e_ts = h_tᵀ W_a m_s``), padded source steps
masked out: ``α_t = softmax_s(e_ts)``, ``c_t = Σ_s α_ts m_s``, ``h̃_t = tanh(W_c [h_t; c_t])``,
``p(y_t) = softmax(W_o h̃_t)``. With ``attention="none"`` the decoder sees the source only
through its initial state: ``p(y_t) = softmax(W_o h_t)`` — the classic Sutskever et al. model.
Because attention here comes after the decoder RNN (no input feeding), teacher-forced training
runs the decoder over all T steps at once and attends for all steps with one batched matmul.

``kind="transformer"`` swaps both sides for Transformer stacks (decoder with causal
self-attention and encoder-decoder attention).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seqlab.data.vocab import PAD
from seqlab.tasks.nets import PositionalTransformer, check_kind, recurrent, select_state

ATTENTION_KINDS = ("none", "dot", "general")


class Seq2Seq(nn.Module):
    def __init__(
        self,
        src_vocab: int,
        tgt_vocab: int,
        kind: str = "lstm",
        embed: int = 64,
        hidden: int = 256,
        layers: int = 1,
        dropout: float = 0.2,
        attention: str = "general",
        heads: int = 4,
        max_len: int = 64,
        impl: str = "torch",
    ):
        super().__init__()
        self.kind = check_kind(kind)
        if attention not in ATTENTION_KINDS:
            raise ValueError(
                f"attention: unknown {attention!r}; expected one of {', '.join(ATTENTION_KINDS)}"
            )
        if hidden % 2:
            raise ValueError(
                f"hidden: expected an even size (two encoder directions), got {hidden}"
            )
        self.attention, self.layers, self.hidden = attention, layers, hidden
        self.drop = nn.Dropout(dropout)
        if kind == "transformer":
            self.src_embed = nn.Embedding(src_vocab, hidden, padding_idx=PAD)
            self.tgt_embed = nn.Embedding(tgt_vocab, hidden, padding_idx=PAD)
            self.encoder = PositionalTransformer(hidden, layers, heads, dropout, max_len)
            self.tgt_pos = nn.Embedding(max_len, hidden)
            block = nn.TransformerDecoderLayer(
                hidden, heads, 4 * hidden, dropout, batch_first=True, norm_first=True
            )
            self.decoder = nn.TransformerDecoder(block, layers)
            self.dec_norm = nn.LayerNorm(hidden)
            self.out = nn.Linear(hidden, tgt_vocab)
            return
        self.src_embed = nn.Embedding(src_vocab, embed, padding_idx=PAD)
        self.tgt_embed = nn.Embedding(tgt_vocab, embed, padding_idx=PAD)
        self.encoder = recurrent(kind, embed, hidden // 2, layers, dropout, True, impl)
        self.decoder = recurrent(kind, embed, hidden, layers, dropout, impl=impl)
        self.w_a = nn.Linear(hidden, hidden, bias=False) if attention == "general" else None
        self.w_c = nn.Linear(2 * hidden, hidden) if attention != "none" else None
        self.out = nn.Linear(hidden, tgt_vocab)

    # ------------------------------------------------------------------ encoder
    def start(self, src: Tensor, src_lengths: Tensor):
        """Encode src (B, S) -> decoding state for :meth:`step`."""
        mask = torch.arange(src.size(1), device=src.device)[None] < src_lengths[:, None]
        x = self.drop(self.src_embed(src))
        if self.kind == "transformer":
            memory = self.encoder(x, causal=False, key_padding=~mask)
            return (src.new_zeros(src.size(0), 0), memory, mask)
        packed = nn.utils.rnn.pack_padded_sequence(
            x, src_lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        m, final = self.encoder(packed)
        m, _ = nn.utils.rnn.pad_packed_sequence(m, batch_first=True, total_length=src.size(1))
        return (self._bridge(final), m, mask)

    def _bridge(self, final):
        """(2L, B, H/2) per part -> (L, B, H): concatenate the two directions of each layer."""

        def join(s: Tensor) -> Tensor:
            L2, B, h = s.shape
            return s.view(L2 // 2, 2, B, h).permute(0, 2, 1, 3).reshape(L2 // 2, B, 2 * h)

        return tuple(join(s) for s in final) if isinstance(final, tuple) else join(final)

    # ------------------------------------------------------------------ decoder
    def _attend(self, h: Tensor, m: Tensor, mask: Tensor) -> tuple[Tensor, Tensor | None]:
        """h (B, T, H), m (B, S, H), mask (B, S) -> (h̃ (B, T, H), α (B, T, S) or None)."""
        if self.attention == "none":
            return h, None
        keys = self.w_a(m) if self.w_a is not None else m
        e = torch.bmm(h, keys.transpose(1, 2))  # (B, T, S)
        alpha = e.masked_fill(~mask[:, None, :], float("-inf")).softmax(-1)
        c = torch.bmm(alpha, m)  # (B, T, H)
        return torch.tanh(self.w_c(torch.cat([h, c], -1))), alpha

    def _transformer_decode(self, prefix: Tensor, memory: Tensor, mask: Tensor) -> Tensor:
        T = prefix.size(1)
        y = self.tgt_embed(prefix) + self.tgt_pos(torch.arange(T, device=prefix.device))
        causal = nn.Transformer.generate_square_subsequent_mask(T, device=prefix.device)
        y = self.decoder(
            self.drop(y), memory, tgt_mask=causal, tgt_is_causal=True, memory_key_padding_mask=~mask
        )
        return self.out(self.dec_norm(y))

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher forcing: tgt_in (B, T) starts with BOS -> logits (B, T, V)."""
        dec_state, m, mask = self.start(src, src_lengths)
        if self.kind == "transformer":
            return self._transformer_decode(tgt_in, m, mask)
        h, _ = self.decoder(self.drop(self.tgt_embed(tgt_in)), dec_state)
        return self.out(self.drop(self._attend(h, m, mask)[0]))

    def step(self, tokens: Tensor, state) -> tuple[Tensor, tuple]:
        """Decoding protocol: previous tokens (B,) -> (logits (B, V), new state)."""
        dec_state, m, mask = state
        if self.kind == "transformer":
            prefix = torch.cat([dec_state, tokens[:, None]], 1)
            return self._transformer_decode(prefix, m, mask)[:, -1], (prefix, m, mask)
        h, dec_state = self.decoder(self.tgt_embed(tokens[:, None]), dec_state)
        return self.out(self._attend(h, m, mask)[0])[:, 0], (dec_state, m, mask)

    def reorder_state(self, state, index: Tensor):
        dec_state, m, mask = state
        if self.kind == "transformer":
            dec_state = dec_state.index_select(0, index)
        else:
            dec_state = select_state(dec_state, index)
        return (dec_state, m.index_select(0, index), mask.index_select(0, index))

    def attention_weights(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tensor:
        """α (B, T, S) under teacher forcing (recurrent kinds with attention only)."""
        dec_state, m, mask = self.start(src, src_lengths)
        h, _ = self.decoder(self.tgt_embed(tgt_in), dec_state)
        _, alpha = self._attend(h, m, mask)
        if alpha is None:
            raise ValueError("attention_weights: this model was built with attention='none'")
        return alpha


@torch.no_grad()
def greedy_decode(model: nn.Module, state, bos: int, eos: int, max_len: int) -> list[list[int]]:
    """Batched arg-max decoding; each row stops at its first ``eos`` (not included)."""
    B = state[1].size(0)
    tokens = torch.full((B,), bos, dtype=torch.long)
    out: list[list[int]] = [[] for _ in range(B)]
    done = torch.zeros(B, dtype=torch.bool)
    for _ in range(max_len):
        logits, state = model.step(tokens, state)
        tokens = logits.argmax(-1)
        for i in torch.nonzero(~done & (tokens != eos)).flatten().tolist():
            out[i].append(int(tokens[i]))
        done |= tokens == eos
        if bool(done.all()):
            break
    return out
