"""Multi-head attention (self and cross) with a key/value cache for incremental decoding.

For input X (B, T, E), memory M (B, S, E), h heads of width d = E / h:

    [W_q; W_k; W_v] = in_proj_weight (3E, E),  [b_q; b_k; b_v] = in_proj_bias (3E,)
    Q = X W_qᵀ + b_q,  K = M W_kᵀ + b_k,  V = M W_vᵀ + b_v        (B, T|S, E)
    split heads:  Q -> (B, h, T, d),  K, V -> (B, h, S, d)
    Z_i = softmax(Q_i K_iᵀ / √d + mask) V_i                         per head i
    out = concat_i(Z_i) W_oᵀ + b_o                                  (B, T, E)

Self-attention is M = X. The parameter names and layout are exactly those of
``torch.nn.MultiheadAttention`` with ``kdim == vdim == embed_dim`` (``in_proj_weight``,
``in_proj_bias``, ``out_proj.weight``, ``out_proj.bias``), so a torch state_dict loads
directly; :mod:`seqlab.attention.convert` checks the configuration and copies it.

Key/value cache (:class:`KVCache`, tensors (B, h, S, d)):
  * ``past_kv`` — self-attention memory of earlier positions; the new positions' K, V are
    appended (``is_causal`` masks are aligned to the end, so query i is position S_past + i);
  * ``static_kv`` — precomputed K, V of an encoder memory (:meth:`project_kv`), used as is.
Every call returns the K, V it attended over, so the caller can carry the cache.
Inputs are batch-first only.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .functional import Backend, scaled_dot_product_attention

__all__ = ["KVCache", "AttentionOutput", "MultiHeadAttention"]


class KVCache(NamedTuple):
    """Projected keys and values, each (B, h, S, d)."""

    k: Tensor
    v: Tensor

    def index_select(self, index: Tensor) -> KVCache:
        """Select/repeat batch rows (beam search)."""
        return KVCache(self.k.index_select(0, index), self.v.index_select(0, index))

    @property
    def length(self) -> int:
        return self.k.shape[-2]


class AttentionOutput(NamedTuple):
    """``output`` (B, T, E); ``weights`` (B, T, S) head-averaged or (B, h, T, S), or None;
    ``kv`` the keys/values attended over."""

    output: Tensor
    weights: Tensor | None
    kv: KVCache


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention (see module docstring for the equations).

    Args:
        embed_dim: E, model width; must be divisible by ``num_heads``.
        num_heads: h.
        dropout: dropout on the attention weights (training only).
        bias: learn the projection biases.
        backend: attention kernel choice, see :func:`scaled_dot_product_attention`.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        backend: Backend = "auto",
    ) -> None:
        super().__init__()
        if embed_dim <= 0:
            raise ValueError(f"embed_dim: expected a positive int, got {embed_dim}")
        if num_heads <= 0 or embed_dim % num_heads != 0:
            raise ValueError(
                f"num_heads: must be positive and divide embed_dim={embed_dim}, got {num_heads}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.backend: Backend = backend
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        if bias:
            self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Xavier on the packed projection and zero biases, as torch.nn.MultiheadAttention.
        nn.init.xavier_uniform_(self.in_proj_weight)
        if self.in_proj_bias is not None:
            nn.init.zeros_(self.in_proj_bias)
            nn.init.zeros_(self.out_proj.bias)

    # ------------------------------------------------------------------ projections
    def _proj(self, x: Tensor, part: slice) -> Tensor:
        b = None if self.in_proj_bias is None else self.in_proj_bias[part]
        return F.linear(x, self.in_proj_weight[part], b)

    def _split(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)  # (B, h, T, d)

    def _check_input(self, name: str, x: Tensor, batch: int | None = None) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"{name}: expected a tensor, got {type(x).__name__}")
        if not x.is_floating_point():  # integer or complex input would fail inside F.linear
            raise TypeError(f"{name}: expected a floating tensor, got dtype {x.dtype}")
        if x.dim() != 3 or x.shape[-1] != self.embed_dim:
            raise ValueError(
                f"{name}: expected shape (B, L, E) with E={self.embed_dim}, got {tuple(x.shape)}"
            )
        if batch is not None and x.shape[0] != batch:
            raise ValueError(f"{name}: expected batch size {batch}, got {tuple(x.shape)}")

    def project_kv(self, memory: Tensor) -> KVCache:
        """Project an encoder memory (B, S, E) once into a reusable :class:`KVCache`."""
        self._check_input("memory", memory)
        e = self.embed_dim
        k_all, v_all = self._proj(memory, slice(e, 3 * e)).chunk(2, dim=-1)
        return KVCache(self._split(k_all), self._split(v_all))

    def empty_cache(
        self, batch_size: int, dtype: torch.dtype | None = None, device: torch.device | None = None
    ) -> KVCache:
        """A zero-length cache (B, h, 0, d): start of incremental self-attention."""
        dtype = self.in_proj_weight.dtype if dtype is None else dtype
        device = self.in_proj_weight.device if device is None else device
        z = torch.zeros(batch_size, self.num_heads, 0, self.head_dim, dtype=dtype, device=device)
        return KVCache(z, z.clone())

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        query: Tensor,
        key: Tensor | None = None,
        value: Tensor | None = None,
        *,
        attn_mask: Tensor | None = None,
        key_mask: Tensor | None = None,
        is_causal: bool = False,
        need_weights: bool = False,
        average_attn_weights: bool = True,
        past_kv: KVCache | None = None,
        static_kv: KVCache | None = None,
    ) -> AttentionOutput:
        """Attend from ``query`` (B, T, E) to ``key``/``value`` (B, S, E).

        ``key``/``value`` default to ``query`` (self-attention). ``attn_mask``: (T, S_total)
        boolean (True = attend) or additive float, or broadcastable to (B, h, T, S_total);
        ``key_mask``: (B, S_total) boolean, True = real key. With ``past_kv`` the new keys are
        appended to the cache and S_total = S_past + T; with ``static_kv`` the cached keys are
        the keys and ``key``/``value`` must be None.
        """
        self._check_input("query", query)
        batch, t, e = query.shape
        if static_kv is not None:
            if key is not None or value is not None or past_kv is not None:
                raise ValueError("static_kv: give either static_kv or key/value/past_kv, not both")
            k, v = static_kv
        else:
            if (key is None) != (value is None):
                raise ValueError("key/value: give both or neither (self-attention)")
            if key is None:
                # Self-attention: one GEMM for Q, K and V together.
                q_all, k_all, v_all = F.linear(query, self.in_proj_weight, self.in_proj_bias).chunk(
                    3, dim=-1
                )
                q, k, v = self._split(q_all), self._split(k_all), self._split(v_all)
            else:
                self._check_input("key", key, batch)
                self._check_input("value", value, batch)
                if key.shape[1] != value.shape[1]:
                    raise ValueError(
                        f"value: expected the key's length {key.shape[1]}, got {tuple(value.shape)}"
                    )
                if key is value:  # encoder memory: one GEMM for K and V together
                    k_all, v_all = self._proj(key, slice(e, 3 * e)).chunk(2, dim=-1)
                    k, v = self._split(k_all), self._split(v_all)
                else:
                    k = self._split(self._proj(key, slice(e, 2 * e)))
                    v = self._split(self._proj(value, slice(2 * e, 3 * e)))
            if past_kv is not None:
                if past_kv.k.shape[:2] != (batch, self.num_heads):
                    raise ValueError(
                        f"past_kv: expected (B, h, S, d) = ({batch}, {self.num_heads}, S, "
                        f"{self.head_dim}), got {tuple(past_kv.k.shape)}"
                    )
                k = torch.cat([past_kv.k, k], dim=2)
                v = torch.cat([past_kv.v, v], dim=2)
        if static_kv is not None or key is not None:
            q = self._split(self._proj(query, slice(0, e)))
        if k.shape[0] != batch:
            raise ValueError(f"static_kv: expected batch size {batch}, got {tuple(k.shape)}")
        if isinstance(attn_mask, Tensor) and attn_mask.dim() == 3:
            if attn_mask.shape[0] != batch:
                raise ValueError(
                    f"attn_mask: a 3-D mask must be (B, T, S) with B={batch}, got "
                    f"{tuple(attn_mask.shape)} (torch's (B*h, T, S) form: see from_torch_attn_mask)"
                )
            attn_mask = attn_mask.unsqueeze(1)  # (B, T, S) -> (B, 1, T, S): same for every head
        z, weights = scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            key_mask=key_mask,
            is_causal=is_causal,
            dropout_p=self.dropout,
            training=self.training,
            need_weights=need_weights,
            backend=self.backend,
        )  # z (B, h, T, d)
        out = self.out_proj(z.transpose(1, 2).reshape(batch, t, e))
        if weights is not None and average_attn_weights:
            weights = weights.mean(dim=1)  # (B, T, S)
        return AttentionOutput(out, weights, KVCache(k, v))

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}, "
            f"backend={self.backend!r}"
        )
