"""Recurrent encoder-decoder (many-to-many with different lengths), with optional attention.

Shapes: ``B`` batch, ``S`` source steps, ``T`` target steps, ``V`` target vocabulary,
``E`` embedding size, ``H_e``/``H_d`` encoder/decoder hidden sizes, ``D`` encoder directions,
``M = D·H_e`` memory size.

Decoder step t (input token y_{t−1}, embedding e = Emb(y_{t−1}), stack state s):

- ``none``:      s_t = Cell(e, s_{t−1});            õ_t = s_t
- ``additive``:  c_t = Attn(s_{t−1}, memory);  s_t = Cell([e; c_t], s_{t−1});
                 õ_t = tanh(W_c [s_t; c_t])                       (Bahdanau)
- ``dot/general``: s_t = Cell([e; õ_{t−1}], s_{t−1});  c_t = Attn(s_t, memory);
                 õ_t = tanh(W_c [s_t; c_t])                       (Luong, input feeding)

logits_t = W_out õ_t. s is the top layer's h.

``input_feeding=False`` (``none``/``dot``/``general`` only) drops the fed-back õ_{t−1}:
s_t = Layer(e, s_{t−1}), then attention and õ_t as above (Luong et al. 2015 without input
feeding). The decoder is then a whole recurrent layer (``impl`` picks seqlab's or torch.nn's)
and teacher-forced training runs it over all T steps at once and attends for all steps with
one batched matmul — much faster than stepping a cell stack.

The bridge maps the encoder's final state to
s_0: ``identity`` copies layer by layer (needs equal layers and D·H_e = H_d), ``linear`` uses
s_0 = tanh(W_b h_top) for every decoder layer (and c_0 = W_bc c_top for LSTM→LSTM, else 0),
``auto`` picks identity when possible, ``none`` starts from zeros.

Batch convention for :meth:`Seq2Seq.loss`: ``src`` (B, S), ``src_lengths`` (B,), ``tgt``
(B, T+1) = [bos, y_1 … y_n, eos, pad …], ``tgt_lengths`` (B,) = n + 2. The decoder reads
``tgt[:, :-1]`` and predicts ``tgt[:, 1:]`` over ``tgt_lengths − 1`` steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from seqlab import decoding
from seqlab.functional.cells import LSTMState
from seqlab.functional.scan import reverse_padded
from seqlab.functional.spec import spec_for_choice
from seqlab.losses import sequence_cross_entropy
from seqlab.models._checks import cells, check_choice, check_tokens
from seqlab.models.attention import ATTENTIONS, Attention, masked_softmax
from seqlab.models.encoders import (
    CellStack,
    RecurrentEncoder,
    select_batch,
    state_from_h,
    state_part,
    top_hidden,
    zero_state,
)
from seqlab.sizes import check_sizes
from seqlab.validation import check_lengths

BRIDGES = ("auto", "identity", "linear", "none")


@dataclass
class Seq2SeqConfig:
    src_vocab: int
    tgt_vocab: int
    embed_size: int = 32
    hidden_size: int = 64  # encoder H_e
    decoder_hidden_size: int | None = None  # H_d, defaults to D·H_e
    encoder_cell: str = "gru"
    decoder_cell: str = "gru"
    encoder_layers: int = 1
    decoder_layers: int = 1
    bidirectional: bool = False
    attention: str = "additive"
    attention_size: int | None = None
    bridge: str = "auto"
    reverse_source: bool = False
    dropout: float = 0.0
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    input_feeding: bool = True
    impl: str = "seqlab"  # recurrent layers: seqlab | torch (see make_recurrent)


class Seq2SeqState(NamedTuple):
    """Decoding state: stack state, memory (B,S,M), keys, mask (B,S), fed-back õ (B,H_d)."""

    rnn: Tensor | LSTMState
    memory: Tensor
    keys: Tensor
    mask: Tensor
    feed: Tensor


def _has_c(cell: str) -> bool:
    """Whether the kind's state has a cell part ``c`` (LSTM, LayerNorm LSTM...)."""
    return "c" in spec_for_choice(cell).state


class Seq2Seq(nn.Module):
    """Recurrent encoder-decoder (source and target of different lengths), with optional
    attention (``none``, ``additive`` — Bahdanau, ``dot``/``general`` — Luong).

    ``forward(src (B, S), src_lengths (B,), tgt_in (B, T)) -> (logits (B, T, V), attention
    weights or None)``; ``start``/``step`` follow the decoding protocol, so greedy, sampling
    and beam search run on it. Settings: :class:`Seq2SeqConfig`; the decoder equations and
    the bridge are in the module docstring (``help(seqlab.models.seq2seq)``).
    """

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        c = self.config = config
        check_sizes(c, ("src_vocab", "tgt_vocab", "embed_size", "hidden_size", "encoder_layers",
                        "decoder_layers"), ("decoder_hidden_size", "attention_size"))  # fmt: skip
        check_choice("encoder_cell", c.encoder_cell, cells())
        check_choice("decoder_cell", c.decoder_cell, cells())
        check_choice("attention", c.attention, ATTENTIONS)
        check_choice("bridge", c.bridge, BRIDGES)
        D = 2 if c.bidirectional else 1
        M = D * c.hidden_size
        Hd = c.decoder_hidden_size or M
        self.memory_size, self.dec_hidden = M, Hd
        self.src_embed = nn.Embedding(c.src_vocab, c.embed_size, padding_idx=c.pad_id)
        self.tgt_embed = nn.Embedding(c.tgt_vocab, c.embed_size, padding_idx=c.pad_id)
        self.encoder = RecurrentEncoder(
            c.encoder_cell,
            c.embed_size,
            c.hidden_size,
            c.encoder_layers,
            c.bidirectional,
            c.dropout,
            c.impl,
        )
        if c.input_feeding:
            extra = {"none": 0, "additive": M}.get(c.attention, Hd)  # context or fed-back õ
            self.decoder: nn.Module = CellStack(
                c.decoder_cell, c.embed_size + extra, Hd, c.decoder_layers, c.dropout
            )
        else:
            if c.attention == "additive":
                raise ValueError(
                    "input_feeding=False: additive attention reads s_{t−1} before the step; "
                    "use attention 'none', 'dot' or 'general'"
                )
            self.decoder = RecurrentEncoder(
                c.decoder_cell, c.embed_size, Hd, c.decoder_layers, False, c.dropout, c.impl
            )
        self.attention = None
        if c.attention != "none":
            self.attention = Attention(c.attention, Hd, M, c.attention_size)
            self.combine = nn.Linear(Hd + M, Hd)
        self.out = nn.Linear(Hd, c.tgt_vocab)
        self.drop = nn.Dropout(c.dropout)
        identity_ok = c.encoder_layers == c.decoder_layers and Hd == M
        if c.bridge == "identity" and not identity_ok:
            raise ValueError(
                "bridge='identity' needs encoder_layers == decoder_layers and decoder_hidden_size"
                f" == D·hidden_size: got layers {c.encoder_layers} vs {c.decoder_layers}, "
                f"sizes {Hd} vs {M}; use bridge='linear'"
            )
        self.bridge = c.bridge if c.bridge != "auto" else ("identity" if identity_ok else "linear")
        if self.bridge == "linear":
            self.bridge_h = nn.Linear(M, Hd)
            if "c" in spec_for_choice(c.encoder_cell).state and _has_c(c.decoder_cell):
                self.bridge_c = nn.Linear(M, Hd)
        self.teacher_forcing = 1.0  # scheduled-sampling ratio used by loss(); set by trainers

    # -- encoder side -------------------------------------------------------------------
    def start(self, src: Tensor, src_lengths: Tensor | None = None) -> Seq2SeqState:
        """Encode a source batch into the initial decoding state."""
        c = self.config
        src = check_tokens("src", src, c.src_vocab)
        B, S = src.shape
        src_lengths = check_lengths(src_lengths, B, S, name="src_lengths")
        if src_lengths is None:
            src_lengths = torch.full((B,), S, dtype=torch.long, device=src.device)
        x = src
        if c.reverse_source:  # Sutskever et al. 2014: reading the source backwards helps
            x = reverse_padded(src.t(), src_lengths).t()
        memory, final = self.encoder(self.drop(self.src_embed(x)), src_lengths)
        if c.reverse_source:  # back to source order, so weights index original positions
            memory = reverse_padded(memory.transpose(0, 1), src_lengths).transpose(0, 1)
        mask = torch.arange(S, device=src.device).unsqueeze(0) < src_lengths.unsqueeze(1)
        keys = self.attention.prepare(memory) if self.attention is not None else memory
        feed = memory.new_zeros(B, self.dec_hidden)
        return Seq2SeqState(self._bridge(final, B, memory), memory, keys, mask, feed)

    def _bridge(self, final, B: int, like: Tensor):
        c = self.config
        D, L = self.encoder.directions, c.decoder_layers
        if self.bridge == "none":
            return zero_state(c.decoder_cell, L, B, self.dec_hidden, like)
        # the state parts are read from the cell descriptions: h, and c where both have one
        enc_h = state_part(c.encoder_cell, final, "h")  # (Le·D, B, He)
        enc_c = state_part(c.encoder_cell, final, "c")

        def merge(s: Tensor) -> Tensor:  # (Le·D, B, He) -> (Le, B, D·He)
            return (
                s.reshape(-1, D, B, s.shape[-1]).permute(0, 2, 1, 3).reshape(-1, B, D * s.shape[-1])
            )

        parts = {}
        if self.bridge == "identity":
            h = merge(enc_h)
            if enc_c is not None:
                parts["c"] = merge(enc_c)
        else:
            h = torch.tanh(self.bridge_h(merge(enc_h)[-1])).expand(L, -1, -1).contiguous()
            if enc_c is not None and _has_c(c.decoder_cell):
                parts["c"] = self.bridge_c(merge(enc_c)[-1]).expand(L, -1, -1).contiguous()
        return state_from_h(c.decoder_cell, h, **parts)

    # -- decoder side -------------------------------------------------------------------
    def _step(self, tokens: Tensor, state: Seq2SeqState):
        kind = self.config.attention
        e = self.drop(self.tgt_embed(tokens))  # (B, E)
        weights = None
        if not self.config.input_feeding:
            logits, rnn, w = self._layer_decode(e.unsqueeze(1), state)
            return logits[:, 0], state._replace(rnn=rnn), None if w is None else w[:, 0]
        if kind == "none":
            y, rnn = self.decoder.step(e, state.rnn)
            o = y
        elif kind == "additive":
            ctx, weights = self.attention(
                top_hidden(state.rnn), state.keys, state.memory, state.mask
            )
            y, rnn = self.decoder.step(torch.cat([e, ctx], -1), state.rnn)
            o = torch.tanh(self.combine(torch.cat([y, ctx], -1)))
        else:
            y, rnn = self.decoder.step(torch.cat([e, state.feed], -1), state.rnn)
            ctx, weights = self.attention(y, state.keys, state.memory, state.mask)
            o = torch.tanh(self.combine(torch.cat([y, ctx], -1)))
        logits = self.out(self.drop(o))
        return logits, state._replace(rnn=rnn, feed=o), weights

    def _layer_decode(self, e: Tensor, state: Seq2SeqState):
        """input_feeding=False: embeddings (B, T, E) -> (logits (B, T, V), rnn state, α)."""
        y, rnn = self.decoder(e, None, state.rnn)  # (B, T, H_d)
        logits, weights = self.readout(y, state)
        return logits, rnn, weights

    def readout(self, y: Tensor, state: Seq2SeqState) -> tuple[Tensor, Tensor | None]:
        """input_feeding=False: decoder outputs s_1..s_T (B, T, H_d) -> (logits (B, T, V),
        α (B, T, S) or None): attention for all steps in one batched matmul."""
        weights = None
        o = y
        if self.attention is not None:
            scores = torch.bmm(y, state.keys.transpose(1, 2))  # (B, T, S): dot / general
            weights = masked_softmax(scores, state.mask.unsqueeze(1))
            ctx = torch.bmm(weights, state.memory)  # (B, T, M)
            o = torch.tanh(self.combine(torch.cat([y, ctx], -1)))
        return self.out(self.drop(o)), weights

    def step(self, tokens: Tensor, state: Seq2SeqState) -> tuple[Tensor, Seq2SeqState]:
        """Decoding protocol: one target token per row -> (logits (B, V), new state)."""
        tokens = check_tokens("tokens", tokens, self.config.tgt_vocab, dims=1)
        logits, state, _ = self._step(tokens, state)
        return logits, state

    def reorder_state(self, state: Seq2SeqState, index: Tensor) -> Seq2SeqState:
        return Seq2SeqState(
            select_batch(state.rnn, index),
            *(t.index_select(0, index) for t in state[1:]),
        )

    def state_batch_size(self, state: Seq2SeqState) -> int:
        return state.memory.shape[0]

    def forward(
        self,
        src: Tensor,
        src_lengths: Tensor | None,
        tgt_in: Tensor,
        teacher_forcing: float = 1.0,
        trace: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Teacher-forced decoding: logits (B, T, V) and attention weights (B, T, S) or None.

        With ``teacher_forcing = p < 1`` (scheduled sampling, Bengio et al. 2015) each row
        feeds the gold y_{t−1} with probability p and its own argmax prediction otherwise.
        ``trace=True`` adds the traces ``{"encoder": [...], "decoder": [...]}`` as a third
        item (see :class:`seqlab.inspection.Probe`).
        """
        if trace:  # every step's gates and states, (B, T, H) per layer·direction
            from seqlab.inspection.probe import trace_model

            (logits, attn), traces = trace_model(self, src, src_lengths, tgt_in, teacher_forcing)
            return logits, attn, traces
        if not 0.0 <= teacher_forcing <= 1.0:
            raise ValueError(f"teacher_forcing must be in [0, 1], got {teacher_forcing}")
        tgt_in = check_tokens("tgt_in", tgt_in, self.config.tgt_vocab)
        state = self.start(src, src_lengths)
        if tgt_in.shape[0] != src.shape[0]:
            raise ValueError(f"tgt_in batch {tgt_in.shape[0]} != src batch {src.shape[0]}")
        if not self.config.input_feeding and teacher_forcing == 1.0:
            logits, _, attn = self._layer_decode(self.drop(self.tgt_embed(tgt_in)), state)
            return logits, attn
        logits, weights = [], []
        tok = tgt_in[:, 0]
        for t in range(tgt_in.shape[1]):
            if t and teacher_forcing < 1.0:
                own = logits[-1].argmax(-1)
                gold = torch.rand(tok.shape[0], device=tok.device) < teacher_forcing
                tok = torch.where(gold, tgt_in[:, t], own)
            elif t:
                tok = tgt_in[:, t]
            z, state, w = self._step(tok, state)
            logits.append(z)
            weights.append(w)
        attn = torch.stack(weights, 1) if self.attention is not None else None
        return torch.stack(logits, 1), attn

    def loss(self, batch: dict) -> Tensor:
        """Mean per-token cross-entropy of ``tgt[:, 1:]`` (see the module docstring)."""
        tgt, n = batch["tgt"], batch.get("tgt_lengths")
        logits, _ = self(batch["src"], batch.get("src_lengths"), tgt[:, :-1], self.teacher_forcing)
        lengths = (
            None
            if n is None
            else check_lengths(n, tgt.shape[0], tgt.shape[1], name="tgt_lengths") - 1
        )
        return sequence_cross_entropy(logits, tgt[:, 1:], lengths)

    @torch.no_grad()
    def generate(
        self,
        src: Tensor,
        src_lengths: Tensor | None = None,
        max_len: int = 50,
        beam_size: int = 1,
        length_penalty: float = 1.0,
        n_best: int = 1,
        **sample_kwargs,
    ) -> decoding.Decoded:
        """Greedy (beam_size=1), beam search (beam_size>1, optionally ``n_best`` hypotheses
        per row), or sampling (pass temperature, top_k, top_p or generator). Tokens exclude
        BOS and include EOS; see :mod:`seqlab.decoding` for the result fields."""
        state = self.start(src, src_lengths)
        c = self.config
        common = {"eos": c.eos_id, "pad": c.pad_id}
        if sample_kwargs:
            return decoding.sample(self, state, c.bos_id, max_len, **common, **sample_kwargs)
        if beam_size == 1 and n_best == 1:
            return decoding.greedy(self, state, c.bos_id, max_len, **common)
        return decoding.beam_search(
            self,
            state,
            c.bos_id,
            max_len,
            beam_size,
            length_penalty=length_penalty,
            n_best=n_best,
            **common,
        )
