"""The task models: a language model, a classifier, an encoder-decoder and a forecaster.

Every model takes ``kind`` in :data:`MODEL_KINDS`. Recurrent kinds are built by
:func:`recurrent` (batch-first ``(B, T, ·)`` in and out, ``forward(x, state) -> (y, state)``,
the API shared by torch.nn and seqlab's layers); ``transformer`` uses a causal/padded
self-attention encoder. Shapes: B batch, T time, E embedding, H hidden, V vocabulary.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seqlab.data.vocab import PAD

MODEL_KINDS = ("lstm", "gru", "rnn", "transformer")
RECURRENT_KINDS = ("lstm", "gru", "rnn")


def check_kind(kind: str, allowed: tuple[str, ...] = MODEL_KINDS) -> str:
    if kind not in allowed:
        raise ValueError(f"model: unknown {kind!r}; expected one of: {', '.join(allowed)}")
    return kind


IMPLS = ("torch", "seqlab")


def recurrent(
    kind: str,
    input_size: int,
    hidden: int,
    layers: int = 1,
    dropout: float = 0.0,
    bidirectional: bool = False,
    impl: str = "torch",
) -> nn.Module:
    """A batch-first recurrent stack of the given kind (LSTM, GRU or Elman tanh RNN).

    ``impl="seqlab"`` builds seqlab's own layers (our BPTT engine), ``impl="torch"`` torch.nn's
    fused kernels. Both have the same constructor, forward API and state_dict keys, so a
    checkpoint trained with one loads into the other.
    """
    if impl not in IMPLS:
        raise ValueError(f"impl: expected one of {', '.join(IMPLS)}, got {impl!r}")
    if impl == "seqlab":
        import seqlab

        table = {"lstm": seqlab.LSTM, "gru": seqlab.GRU, "rnn": seqlab.RNN}
    else:
        table = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
    cls = table[check_kind(kind, RECURRENT_KINDS)]
    return cls(
        input_size,
        hidden,
        num_layers=layers,
        batch_first=True,
        dropout=dropout if layers > 1 else 0.0,
        bidirectional=bidirectional,
    )


def top_hidden(state) -> Tensor:
    """The h part of a recurrent state (tensor for RNN/GRU, (h, c) for LSTM): (L·D, B, H)."""
    return state[0] if isinstance(state, tuple) else state


def select_state(state, index: Tensor):
    """Rows ``index`` of the batch dimension (dim 1) of a recurrent state."""
    if isinstance(state, tuple):
        parts = [s.index_select(1, index) for s in state]
        return type(state)(*parts) if hasattr(state, "_fields") else tuple(parts)
    return state.index_select(1, index)


class PositionalTransformer(nn.Module):
    """Token embeddings + learned positions -> pre-norm Transformer encoder stack.

    ``causal=True`` masks the future (language model); ``key_padding`` masks PAD positions.
    """

    def __init__(self, dim: int, layers: int, heads: int, dropout: float, max_len: int):
        super().__init__()
        self.pos = nn.Embedding(max_len, dim)
        block = nn.TransformerEncoderLayer(
            dim, heads, 4 * dim, dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.max_len = max_len

    def forward(self, x: Tensor, causal: bool, key_padding: Tensor | None = None) -> Tensor:
        steps = x.size(1)
        if steps > self.max_len:
            raise ValueError(f"x: sequence length {steps} exceeds max_len={self.max_len}")
        x = x + self.pos(torch.arange(steps, device=x.device))  # (B, T, E)
        causal_mask = nn.Transformer.generate_square_subsequent_mask
        mask = causal_mask(steps, device=x.device) if causal else None
        return self.norm(
            self.encoder(x, mask=mask, is_causal=causal, src_key_padding_mask=key_padding)
        )


class LanguageModel(nn.Module):
    """Next-token model: ``p(x_{t+1} | x_{≤t}) = softmax(W_o h_t + b_o)``.

    forward(ids (B, T), state) -> (logits (B, T, V), state). For the transformer the "state" is
    the token history (B, T_ctx) kept to ``max_len`` tokens, so ``step`` works the same way.
    """

    def __init__(
        self,
        vocab_size: int,
        kind: str = "lstm",
        embed: int = 64,
        hidden: int = 512,
        layers: int = 1,
        dropout: float = 0.0,
        heads: int = 4,
        max_len: int = 256,
        impl: str = "torch",
    ):
        super().__init__()
        self.kind = check_kind(kind)
        self.embed = nn.Embedding(vocab_size, hidden if kind == "transformer" else embed)
        self.drop = nn.Dropout(dropout)
        if kind == "transformer":
            self.body = PositionalTransformer(hidden, layers, heads, dropout, max_len)
        else:
            self.body = recurrent(kind, embed, hidden, layers, dropout, impl=impl)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, ids: Tensor, state=None) -> tuple[Tensor, object]:
        if self.kind == "transformer":
            hist = ids if state is None else torch.cat([state, ids], 1)
            hist = hist[:, -self.body.max_len :]
            y = self.body(self.drop(self.embed(hist)), causal=True)[:, -ids.size(1) :]
            return self.head(self.drop(y)), hist
        y, state = self.body(self.drop(self.embed(ids)), state)  # (B, T, H)
        return self.head(self.drop(y)), state

    def step(self, tokens: Tensor, state) -> tuple[Tensor, object]:
        """Decoding protocol: tokens (B,) -> (logits (B, V), new state)."""
        logits, state = self(tokens[:, None], state)
        return logits[:, -1], state

    def reorder_state(self, state, index: Tensor):
        if self.kind == "transformer":
            return state.index_select(0, index)
        return select_state(state, index)


class Classifier(nn.Module):
    """Many-to-one: embeddings -> (bi)recurrent or Transformer encoder -> pooled -> logits.

    ``pool`` "max" takes the element-wise max of valid steps, "mean" their average, "last" the
    final valid state (for bidirectional: forward last step + backward first step).
    """

    def __init__(
        self,
        vocab_size: int,
        classes: int,
        kind: str = "lstm",
        embed: int = 128,
        hidden: int = 128,
        layers: int = 1,
        dropout: float = 0.5,
        bidirectional: bool = True,
        pool: str = "max",
        heads: int = 4,
        max_len: int = 512,
        impl: str = "torch",
    ):
        super().__init__()
        self.kind, self.pool = check_kind(kind), pool
        if pool not in ("max", "mean", "last"):
            raise ValueError(f"pool: expected max, mean or last, got {pool!r}")
        self.embed = nn.Embedding(
            vocab_size, hidden if kind == "transformer" else embed, padding_idx=PAD
        )
        if kind == "transformer":
            self.body = PositionalTransformer(hidden, layers, heads, dropout * 0.2, max_len)
            out = hidden
        else:
            self.body = recurrent(kind, embed, hidden, layers, dropout, bidirectional, impl)
            out = hidden * (2 if bidirectional else 1)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(out, classes)

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        B, T = ids.shape
        valid = torch.arange(T, device=ids.device)[None, :] < lengths[:, None]  # (B, T)
        x = self.drop(self.embed(ids))
        if self.kind == "transformer":
            y = self.body(x, causal=False, key_padding=~valid)
        else:
            packed = nn.utils.rnn.pack_padded_sequence(
                x, lengths.cpu(), batch_first=True, enforce_sorted=False
            )
            y, _ = self.body(packed)
            y, _ = nn.utils.rnn.pad_packed_sequence(y, batch_first=True, total_length=T)
        if self.pool == "max":
            pooled = y.masked_fill(~valid[..., None], float("-inf")).amax(1)
        elif self.pool == "mean":
            pooled = (y * valid[..., None]).sum(1) / lengths[:, None].to(y.dtype)
        else:
            last = y[torch.arange(B), lengths - 1]
            if getattr(self.body, "bidirectional", False):
                H = y.size(-1) // 2
                last = torch.cat([last[:, :H], y[:, 0, H:]], -1)
            pooled = last
        return self.head(self.drop(pooled))


class Forecaster(nn.Module):
    """Window of W past values (B, W) -> next value (B,).

    ``ŷ = w_oᵀ h_W + b_o + a ᵀ x`` : a recurrent (or Transformer) read of the window plus, when
    ``highway`` is on, a linear autoregressive term ``aᵀ x`` over the same window (the
    "highway" of LSTNet, Lai et al. 2018) so the network only has to learn the non-linear part.
    """

    def __init__(
        self,
        window: int,
        kind: str = "lstm",
        hidden: int = 32,
        layers: int = 1,
        dropout: float = 0.0,
        highway: bool = True,
        heads: int = 4,
        impl: str = "torch",
    ):
        super().__init__()
        self.kind, self.window = check_kind(kind), window
        self.inp = nn.Linear(1, hidden) if kind == "transformer" else None
        if kind == "transformer":
            self.body = PositionalTransformer(hidden, layers, heads, dropout, window)
        else:
            self.body = recurrent(kind, 1, hidden, layers, dropout, impl=impl)
        self.head = nn.Linear(hidden, 1)
        self.highway = nn.Linear(window, 1) if highway else None

    def forward(self, x: Tensor) -> Tensor:
        seq = x[..., None]  # (B, W, 1)
        if self.kind == "transformer":
            h = self.body(self.inp(seq), causal=True)[:, -1]
        else:
            h = self.body(seq)[0][:, -1]  # (B, H)
        y = self.head(h)[:, 0]
        if self.highway is not None:
            y = y + self.highway(x)[:, 0]
        return y


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def init_forget_bias(model: nn.Module, value: float = 1.0) -> None:
    """Set LSTM forget-gate biases to ``value`` (Jozefowicz et al. 2015): gates i,f,g,o."""
    for m in model.modules():
        if isinstance(m, nn.LSTM):
            for name, p in m.named_parameters():
                if name.startswith("bias_ih"):
                    H = p.numel() // 4
                    with torch.no_grad():
                        p[H : 2 * H].fill_(value)
