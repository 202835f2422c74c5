"""Encoder-decoder Transformer: the encoder reads all S source tokens at once, the decoder
produces the target one token at a time, attending to the encoder output (the memory).

    m   = Encoder(EmbedSrc(src) + PE, key_mask = src padding)          (B, S, E)
    y   = Decoder(EmbedTgt(tgt_in) + PE, m, causal, memory_key_mask)   (B, T, E)
    logits = y W_outᵀ + b_out                                           (B, T, V_tgt)

Source padding is masked out of every attention over the source (so padding never changes
outputs at valid positions); target padding is harmless under the causal mask (ignore it in
the loss). Source and target vocabularies (and lengths) may differ.

Decoding protocol: ``start(src, src_lengths)`` encodes once and returns a
:class:`Seq2SeqState` holding the per-layer cross-attention K/V of the memory, the per-layer
self-attention caches (empty at first), the memory key mask and the next position;
``step(tokens (B,), state) -> (logits (B, V), state)``; ``reorder_state(state, index)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from seqlab.attention.masks import key_mask_from_lengths
from seqlab.attention.multihead import KVCache

from .embedding import TokenEmbedding, check_tokens
from .loss import masked_cross_entropy
from .stacks import LayerConfig, TransformerDecoder, TransformerEncoder

__all__ = ["TransformerSeq2SeqConfig", "Seq2SeqState", "TransformerSeq2Seq"]


@dataclass
class TransformerSeq2SeqConfig:
    src_vocab_size: int
    tgt_vocab_size: int
    d_model: int = 128
    nhead: int = 4
    num_encoder_layers: int = 2
    num_decoder_layers: int = 2
    dim_feedforward: int = 512
    dropout: float = 0.1
    max_len: int = 512
    pad_id: int | None = 0
    bos_id: int = 1
    eos_id: int = 2
    norm_first: bool = True
    positional: str = "sinusoidal"
    activation: str = "relu"
    tie_weights: bool = False


class Seq2SeqState(NamedTuple):
    memory_kv: tuple[KVCache, ...]  # per decoder layer, (B, h, S, d) each
    self_kv: tuple[KVCache, ...]  # per decoder layer, (B, h, t, d) each
    memory_key_mask: Tensor | None  # (B, S), True = real source token
    position: int


class TransformerSeq2Seq(nn.Module):
    """``forward(src (B, S), src_lengths (B,) | None, tgt_in (B, T)) -> logits (B, T, V_tgt)``.

    Keyword arguments are the fields of :class:`TransformerSeq2SeqConfig`. With
    ``src_lengths=None`` the source mask is ``src != pad_id`` (no mask if ``pad_id`` is None).
    """

    def __init__(self, src_vocab_size: int, tgt_vocab_size: int, **kwargs: Any) -> None:
        super().__init__()
        cfg = TransformerSeq2SeqConfig(src_vocab_size, tgt_vocab_size, **kwargs)
        self.config = cfg
        emb = (cfg.d_model, cfg.max_len, cfg.positional, cfg.dropout, cfg.pad_id)
        self.src_embedding = TokenEmbedding(cfg.src_vocab_size, *emb)
        self.tgt_embedding = TokenEmbedding(cfg.tgt_vocab_size, *emb)
        layer = LayerConfig(
            d_model=cfg.d_model,
            nhead=cfg.nhead,
            dim_feedforward=cfg.dim_feedforward,
            dropout=cfg.dropout,
            activation=cfg.activation,
            norm_first=cfg.norm_first,
        )
        self.encoder = TransformerEncoder(layer, cfg.num_encoder_layers)
        self.decoder = TransformerDecoder(layer, cfg.num_decoder_layers)
        self.output = nn.Linear(cfg.d_model, cfg.tgt_vocab_size)
        if cfg.tie_weights:
            self.output.weight = self.tgt_embedding.embed.weight

    @classmethod
    def from_config(cls, config: TransformerSeq2SeqConfig) -> TransformerSeq2Seq:
        fields = asdict(config)
        return cls(fields.pop("src_vocab_size"), fields.pop("tgt_vocab_size"), **fields)

    def _check_length(self, name: str, end: int) -> None:
        if self.config.positional == "learned" and end > self.config.max_len:
            raise ValueError(
                f"{name}: sequence length {end} exceeds the learned positional table "
                f"max_len={self.config.max_len}"
            )

    def source_mask(self, src: Tensor, src_lengths: Tensor | None) -> Tensor | None:
        """(B, S) key mask, True = real source token."""
        if src_lengths is not None:
            if not isinstance(src_lengths, Tensor) or src_lengths.shape != (src.shape[0],):
                got = tuple(src_lengths.shape) if isinstance(src_lengths, Tensor) else src_lengths
                raise ValueError(f"src_lengths: expected shape ({src.shape[0]},), got {got}")
            if int(src_lengths.max()) > src.shape[1] or int(src_lengths.min()) < 0:
                raise ValueError(
                    f"src_lengths: values must lie in [0, S={src.shape[1]}], got "
                    f"{src_lengths.tolist()}"
                )
            return key_mask_from_lengths(src_lengths.to(src.device), src.shape[1])
        if self.config.pad_id is None:
            return None
        return src != self.config.pad_id

    def encode(
        self, src: Tensor, src_lengths: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """``src`` (B, S) -> (memory (B, S, E), memory key mask (B, S) or None)."""
        check_tokens("src", src, self.config.src_vocab_size)
        self._check_length("src", src.shape[1])
        mask = self.source_mask(src, src_lengths)
        memory = self.encoder(self.src_embedding(src), src_key_mask=mask)
        return memory, mask

    def forward(self, src: Tensor, src_lengths: Tensor | None, tgt_in: Tensor) -> Tensor:
        """Teacher-forced logits (B, T, V_tgt); logits[:, t] predicts the token after tgt_in[:, t].

        ``src`` (B, S), ``src_lengths`` (B,) or None, ``tgt_in`` (B, T) (starts with BOS).
        """
        check_tokens("tgt_in", tgt_in, self.config.tgt_vocab_size)
        self._check_length("tgt_in", tgt_in.shape[1])
        if tgt_in.shape[0] != src.shape[0]:
            raise ValueError(f"tgt_in: batch {tgt_in.shape[0]} != src batch {src.shape[0]}")
        memory, mask = self.encode(src, src_lengths)
        y = self.decoder(self.tgt_embedding(tgt_in), memory, memory_key_mask=mask)
        return self.output(y)

    def loss(self, batch: dict) -> Tensor:
        """Mean cross-entropy of ``tgt[:, 1:]`` given ``tgt[:, :-1]`` (teacher forcing).

        ``batch``: ``src`` (B, S), optional ``src_lengths`` (B,), ``tgt`` (B, T) = BOS y_1 ..
        EOS, optional ``tgt_lengths`` (B,) counting BOS and EOS — the recurrent Seq2Seq's
        convention. Targets equal to ``pad_id`` are skipped as well.
        """
        tgt, n = batch["tgt"], batch.get("tgt_lengths")
        logits = self(batch["src"], batch.get("src_lengths"), tgt[:, :-1])
        lengths = None if n is None else n - 1
        return masked_cross_entropy(logits, tgt[:, 1:], lengths, self.config.pad_id)

    # ------------------------------------------------------------------ decoding protocol
    def start(self, src: Tensor, src_lengths: Tensor | None = None) -> Seq2SeqState:
        """Encode ``src`` once; cache the memory's cross-attention K/V for every layer."""
        memory, mask = self.encode(src, src_lengths)
        memory_kv = self.decoder.project_memory(memory)
        batch = src.shape[0]
        self_kv = tuple(
            layer.self_attn.empty_cache(batch, memory.dtype, memory.device)
            for layer in self.decoder.layers
        )
        return Seq2SeqState(memory_kv, self_kv, mask, 0)

    def step(self, tokens: Tensor, state: Seq2SeqState) -> tuple[Tensor, Seq2SeqState]:
        """Feed target ``tokens`` (B,) at ``state.position`` -> (logits (B, V_tgt), new state)."""
        check_tokens("tokens", tokens, self.config.tgt_vocab_size, dim=1)
        self._check_length("tokens", state.position + 1)
        x = self.tgt_embedding(tokens.unsqueeze(1), state.position)  # (B, 1, E)
        y, self_kv = self.decoder.forward_with_cache(
            x,
            memory_key_mask=state.memory_key_mask,
            tgt_is_causal=False,  # one new query attending to all cached (earlier) positions
            past_kv=state.self_kv,
            memory_kv=state.memory_kv,
        )
        logits = self.output(y[:, 0])
        return logits, Seq2SeqState(
            state.memory_kv, self_kv, state.memory_key_mask, state.position + 1
        )

    def reorder_state(self, state: Seq2SeqState, index: Tensor) -> Seq2SeqState:
        """Select/repeat batch rows: new row b' is old row ``index[b']`` (beam expansion)."""
        mask = state.memory_key_mask
        return Seq2SeqState(
            tuple(c.index_select(index) for c in state.memory_kv),
            tuple(c.index_select(index) for c in state.self_kv),
            None if mask is None else mask.index_select(0, index),
            state.position,
        )

    def state_batch_size(self, state: Seq2SeqState) -> int:
        """Rows in ``state`` (lets decoding functions broadcast an int ``bos``)."""
        return state.memory_kv[0].k.shape[0]

    @torch.no_grad()
    def generate(
        self,
        src: Tensor,
        src_lengths: Tensor | None = None,
        max_len: int = 50,
        beam_size: int = 1,
        length_penalty: float = 1.0,
        **sample_kwargs: Any,
    ) -> Any:
        """Decode targets for ``src`` with seqlab.decoding, starting from ``bos_id`` and
        stopping rows at ``eos_id``: greedy (``beam_size=1``), beam search (``beam_size > 1``)
        or sampling (pass temperature, top_k, top_p or generator) — the same call as the
        recurrent Seq2Seq.generate. Tokens exclude BOS and include EOS."""
        from seqlab import decoding  # the decoding functions live with the recurrent models

        c = self.config
        pad = {} if c.pad_id is None else {"pad": c.pad_id}
        was_training = self.training
        self.eval()
        try:
            state = self.start(src, src_lengths)
            if sample_kwargs:
                return decoding.sample(
                    self, state, c.bos_id, max_len, eos=c.eos_id, **pad, **sample_kwargs
                )
            if beam_size == 1:
                return decoding.greedy(self, state, c.bos_id, max_len, eos=c.eos_id, **pad)
            return decoding.beam_search(
                self,
                state,
                c.bos_id,
                max_len,
                beam_size,
                eos=c.eos_id,
                length_penalty=length_penalty,
                **pad,
            )
        finally:
            self.train(was_training)
