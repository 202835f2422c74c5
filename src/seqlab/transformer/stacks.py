"""Stacks of encoder / decoder layers, with per-layer caches for incremental decoding.

    h_0 = x;  h_l = Layer_l(h_{l-1});  out = LN_final(h_L)  (final LayerNorm for pre-norm stacks,
    where the residual stream is never normalised otherwise)

Each layer is built from the same :class:`LayerConfig` but has its own parameters.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import Tensor, nn

from seqlab.attention.multihead import KVCache

from .layers import DecoderLayer, EncoderLayer

__all__ = ["LayerConfig", "TransformerEncoder", "TransformerDecoder"]


@dataclass
class LayerConfig:
    """Hyper-parameters shared by every layer of a stack."""

    d_model: int
    nhead: int
    dim_feedforward: int = 2048
    dropout: float = 0.1
    activation: str = "relu"
    layer_norm_eps: float = 1e-5
    norm_first: bool = False
    bias: bool = True


def _check_layers(num_layers: int) -> None:
    if num_layers <= 0:
        raise ValueError(f"num_layers: expected a positive int, got {num_layers}")


def _check_cache(name: str, cache: tuple | None, num_layers: int) -> None:
    if cache is not None and len(cache) != num_layers:
        raise ValueError(f"{name}: expected one entry per layer ({num_layers}), got {len(cache)}")


class TransformerEncoder(nn.Module):
    """``num_layers`` :class:`EncoderLayer` s; ``final_norm`` defaults to ``config.norm_first``.

    Also the body of a decoder-only LM (``is_causal=True`` with ``past_kv`` caches).
    """

    def __init__(self, config: LayerConfig, num_layers: int, final_norm: bool | None = None):
        super().__init__()
        _check_layers(num_layers)
        self.config = config
        self.layers = nn.ModuleList(EncoderLayer(**asdict(config)) for _ in range(num_layers))
        use_norm = config.norm_first if final_norm is None else final_norm
        self.norm = (
            nn.LayerNorm(config.d_model, eps=config.layer_norm_eps, bias=config.bias)
            if use_norm
            else None
        )

    def forward_with_cache(
        self,
        src: Tensor,
        mask: Tensor | None = None,
        src_key_mask: Tensor | None = None,
        is_causal: bool = False,
        past_kv: tuple[KVCache, ...] | None = None,
    ) -> tuple[Tensor, tuple[KVCache, ...]]:
        """``src`` (B, T, E) -> (output (B, T, E), per-layer self-attention K/V)."""
        _check_cache("past_kv", past_kv, len(self.layers))
        x = src
        kvs = []
        for i, layer in enumerate(self.layers):
            past = None if past_kv is None else past_kv[i]
            x, kv = layer.forward_with_cache(x, mask, src_key_mask, is_causal, past)
            kvs.append(kv)
        if self.norm is not None:
            x = self.norm(x)
        return x, tuple(kvs)

    def forward(
        self,
        src: Tensor,
        mask: Tensor | None = None,
        src_key_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        return self.forward_with_cache(src, mask, src_key_mask, is_causal)[0]


class TransformerDecoder(nn.Module):
    """``num_layers`` :class:`DecoderLayer` s; ``final_norm`` defaults to ``config.norm_first``."""

    def __init__(self, config: LayerConfig, num_layers: int, final_norm: bool | None = None):
        super().__init__()
        _check_layers(num_layers)
        self.config = config
        self.layers = nn.ModuleList(DecoderLayer(**asdict(config)) for _ in range(num_layers))
        use_norm = config.norm_first if final_norm is None else final_norm
        self.norm = (
            nn.LayerNorm(config.d_model, eps=config.layer_norm_eps, bias=config.bias)
            if use_norm
            else None
        )

    def project_memory(self, memory: Tensor) -> tuple[KVCache, ...]:
        """Cross-attention K/V of the encoder memory (B, S, E), once per layer."""
        return tuple(layer.multihead_attn.project_kv(memory) for layer in self.layers)

    def forward_with_cache(
        self,
        tgt: Tensor,
        memory: Tensor | None = None,
        tgt_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        tgt_key_mask: Tensor | None = None,
        memory_key_mask: Tensor | None = None,
        tgt_is_causal: bool = True,
        past_kv: tuple[KVCache, ...] | None = None,
        memory_kv: tuple[KVCache, ...] | None = None,
    ) -> tuple[Tensor, tuple[KVCache, ...]]:
        """``tgt`` (B, T, E) with ``memory`` (B, S, E) or its per-layer ``memory_kv``.

        Returns (output (B, T, E), per-layer self-attention K/V including ``past_kv``).
        """
        _check_cache("past_kv", past_kv, len(self.layers))
        _check_cache("memory_kv", memory_kv, len(self.layers))
        y = tgt
        kvs = []
        for i, layer in enumerate(self.layers):
            y, kv = layer.forward_with_cache(
                y,
                memory,
                tgt_mask,
                memory_mask,
                tgt_key_mask,
                memory_key_mask,
                tgt_is_causal,
                None if past_kv is None else past_kv[i],
                None if memory_kv is None else memory_kv[i],
            )
            kvs.append(kv)
        if self.norm is not None:
            y = self.norm(y)
        return y, tuple(kvs)

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        tgt_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        tgt_key_mask: Tensor | None = None,
        memory_key_mask: Tensor | None = None,
        tgt_is_causal: bool = True,
    ) -> Tensor:
        return self.forward_with_cache(
            tgt, memory, tgt_mask, memory_mask, tgt_key_mask, memory_key_mask, tgt_is_causal
        )[0]
