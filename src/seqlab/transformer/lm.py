"""Decoder-only Transformer language model (next-token prediction).

    x_0 = Embed(tokens) + PE                       (B, T, E)
    x_L = CausalEncoderStack(x_0)                  query t attends only to positions <= t
    logits = x_L W_outᵀ + b_out                    (B, T, V)

Right padding never changes the logits at valid positions (causality), so no padding mask
is needed; ignore padded targets in the loss (e.g. ``cross_entropy(ignore_index=pad_id)``).

Decoding protocol (see seqlab.decoding): ``start(...)`` builds an :class:`LMState` (one
self-attention :class:`KVCache` (B, h, t, d) per layer and the next position t);
``step(tokens (B,), state) -> (logits (B, V), state)`` feeds one token per row;
``reorder_state(state, index)`` selects rows. Incremental decoding equals the full forward.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from seqlab.attention.multihead import KVCache
from seqlab.sizes import check_sizes

from .embedding import TokenEmbedding, check_tokens
from .loss import masked_cross_entropy
from .stacks import LayerConfig, TransformerEncoder

__all__ = ["TransformerLMConfig", "LMState", "TransformerLM"]


@dataclass
class TransformerLMConfig:
    vocab_size: int
    d_model: int = 128
    nhead: int = 4
    num_layers: int = 2
    dim_feedforward: int = 512
    dropout: float = 0.1
    max_len: int = 512
    pad_id: int | None = None
    norm_first: bool = True
    positional: str = "sinusoidal"
    activation: str = "relu"
    tie_weights: bool = False


class LMState(NamedTuple):
    """Incremental decoding state: per-layer self-attention caches and the next position."""

    kv: tuple[KVCache, ...]
    position: int


class TransformerLM(nn.Module):
    """Causal Transformer LM; ``forward(tokens (B, T)) -> logits (B, T, V)``.

    Keyword arguments are the fields of :class:`TransformerLMConfig`.
    """

    def __init__(self, vocab_size: int, **kwargs: Any) -> None:
        super().__init__()
        cfg = TransformerLMConfig(vocab_size=vocab_size, **kwargs)
        check_sizes(cfg, ("vocab_size", "d_model", "nhead", "num_layers", "dim_feedforward",
                          "max_len"))  # fmt: skip
        self.config = cfg
        self.embedding = TokenEmbedding(
            cfg.vocab_size, cfg.d_model, cfg.max_len, cfg.positional, cfg.dropout, cfg.pad_id
        )
        layer = LayerConfig(
            d_model=cfg.d_model,
            nhead=cfg.nhead,
            dim_feedforward=cfg.dim_feedforward,
            dropout=cfg.dropout,
            activation=cfg.activation,
            norm_first=cfg.norm_first,
        )
        self.body = TransformerEncoder(layer, cfg.num_layers)
        self.output = nn.Linear(cfg.d_model, cfg.vocab_size)
        if cfg.tie_weights:
            self.output.weight = self.embedding.embed.weight

    @classmethod
    def from_config(cls, config: TransformerLMConfig) -> TransformerLM:
        fields = asdict(config)
        return cls(fields.pop("vocab_size"), **fields)

    def _check_length(self, name: str, end: int) -> None:
        if self.config.positional == "learned" and end > self.config.max_len:
            raise ValueError(
                f"{name}: sequence length {end} exceeds the learned positional table "
                f"max_len={self.config.max_len}"
            )

    def _run(
        self, tokens: Tensor, past: tuple[KVCache, ...] | None, offset: int
    ) -> tuple[Tensor, tuple[KVCache, ...]]:
        h, kv = self._hidden(tokens, past, offset)
        return self.output(h), kv  # (B, T, V)

    def _hidden(
        self, tokens: Tensor, past: tuple[KVCache, ...] | None, offset: int
    ) -> tuple[Tensor, tuple[KVCache, ...]]:
        x = self.embedding(tokens, offset)  # (B, T, E)
        return self.body.forward_with_cache(x, is_causal=True, past_kv=past)  # (B, T, E)

    def forward(self, tokens: Tensor) -> Tensor:
        """``tokens`` (B, T) -> logits (B, T, V); logits[:, t] predicts tokens[:, t + 1]."""
        check_tokens("tokens", tokens, self.config.vocab_size)
        self._check_length("tokens", tokens.shape[1])
        return self._run(tokens, None, 0)[0]

    def loss(self, batch: dict) -> Tensor:
        """Mean next-token cross-entropy over valid steps.

        ``batch``: ``inputs`` (B, T), ``targets`` (B, T), optional ``lengths`` (B,) — the
        recurrent LanguageModel's convention. A ``state`` entry is ignored: the Transformer
        carries no state between training chunks. Targets equal to ``pad_id`` are skipped.
        """
        logits = self(batch["inputs"])
        return masked_cross_entropy(
            logits, batch["targets"], batch.get("lengths"), self.config.pad_id
        )

    # ------------------------------------------------------------------ decoding protocol
    def start(self, batch_size: int | None = None, prompt: Tensor | None = None) -> LMState:
        """Empty state for ``batch_size`` rows, or the state after reading all of ``prompt``
        (B, P) (equal-length prompts). The next ``step`` input is the token following it."""
        if prompt is None:
            if batch_size is None or batch_size <= 0:
                raise ValueError(f"batch_size: expected a positive int, got {batch_size}")
            attn = self.body.layers[0].self_attn
            empty = tuple(attn.empty_cache(batch_size) for _ in self.body.layers)
            return LMState(empty, 0)
        check_tokens("prompt", prompt, self.config.vocab_size)
        if batch_size is not None and batch_size != prompt.shape[0]:
            raise ValueError(f"batch_size: {batch_size} != prompt batch {prompt.shape[0]}")
        if prompt.shape[1] == 0:
            return self.start(batch_size=prompt.shape[0])
        self._check_length("prompt", prompt.shape[1])
        _, kv = self._hidden(prompt, None, 0)  # only the caches are needed, not the logits
        return LMState(kv, prompt.shape[1])

    def step(self, tokens: Tensor, state: LMState) -> tuple[Tensor, LMState]:
        """Feed ``tokens`` (B,) at position ``state.position``; -> (logits (B, V), new state)."""
        check_tokens("tokens", tokens, self.config.vocab_size, dim=1)
        self._check_length("tokens", state.position + 1)
        logits, kv = self._run(tokens.unsqueeze(1), state.kv, state.position)
        return logits[:, 0], LMState(kv, state.position + 1)

    def reorder_state(self, state: LMState, index: Tensor) -> LMState:
        """Select/repeat batch rows: every cache row b' becomes old row ``index[b']``."""
        return LMState(tuple(c.index_select(index) for c in state.kv), state.position)

    def state_batch_size(self, state: LMState) -> int:
        """Rows in ``state`` (lets decoding functions broadcast an int ``bos``)."""
        return state.kv[0].k.shape[0]

    @torch.no_grad()
    def generate(
        self,
        prompt: Tensor,
        max_len: int,
        strategy: str | None = None,
        eos: int | None = None,
        **kwargs: Any,
    ) -> Any:
        """Continue ``prompt`` (B, P >= 1) by up to ``max_len`` tokens with seqlab.decoding.

        The prompt minus its last token is read in one pass (:meth:`start`); its last token is
        the first decoder input. ``strategy``: ``"greedy"``, ``"sample"`` (temperature, top_k,
        top_p, generator) or ``"beam"`` (beam_size, length_penalty, n_best) — the same call as
        the recurrent LanguageModel.generate, also when ``strategy`` is left out (sample if a
        sampling option is given, else greedy; ``temperature=0``: greedy). Returns
        seqlab.decoding's ``Decoded``.
        """
        from seqlab import decoding  # the decoding functions live with the recurrent models

        strategy = decoding.pick_strategy(strategy, kwargs)

        functions = {
            "greedy": decoding.greedy,
            "sample": decoding.sample,
            "beam": decoding.beam_search,
        }
        if strategy not in functions:
            raise ValueError(f"strategy: expected one of {sorted(functions)}, got {strategy!r}")
        check_tokens("prompt", prompt, self.config.vocab_size)
        if prompt.shape[1] < 1:
            raise ValueError(f"prompt: needs at least one token per row, got {tuple(prompt.shape)}")
        was_training = self.training
        self.eval()
        try:
            state = self.start(prompt=prompt[:, :-1])
            return functions[strategy](self, state, prompt[:, -1], max_len, eos=eos, **kwargs)
        finally:
            self.train(was_training)
