"""Recurrent language model: next-token prediction with stateful continuation.

    e_t = Emb(x_t);  (o_t, s_t) = RNN(e_t, s_{t−1});  logits_t = W_out o_t (+ b)

With ``tie_weights`` W_out is the embedding matrix (Press & Wolf 2017; needs E = H).

=========  ===========  ===================================
name       shape        meaning
=========  ===========  ===================================
tokens     (B, T)       input ids x_1..x_T
logits     (B, T, V)    scores for x_2..x_{T+1}
state      (L, B, H)    or LSTMState; carried across calls
=========  ===========  ===================================

Streaming / truncated BPTT: ``logits, state = lm(chunk, state)`` then feed
``detach_state(state)`` with the next chunk; this equals one call on the concatenation.
Batch convention for :meth:`LanguageModel.loss`: ``inputs`` (B, T), ``targets`` (B, T),
optional ``lengths`` (B,), ``resets`` (B, T) and ``state``; ``loss(batch, state)`` returns
``(loss, new_state)`` for :class:`seqlab.training.Trainer` with TBPTT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from seqlab import decoding
from seqlab.functional.scan import tree_map
from seqlab.losses import sequence_cross_entropy
from seqlab.models._checks import check_positive, check_tokens
from seqlab.models.encoders import RecurrentEncoder, State, select_batch, zero_state
from seqlab.sizes import check_sizes
from seqlab.validation import check_lengths

_NO_STATE = object()  # sentinel: loss(batch) vs loss(batch, state=None)


def _scale_state(state: State, keep: Tensor) -> State:
    return tree_map(lambda s: s * keep, state)  # every state part of any cell kind


@dataclass
class LanguageModelConfig:
    vocab_size: int
    embed_size: int = 64
    hidden_size: int = 128
    num_layers: int = 1
    cell: str = "lstm"
    dropout: float = 0.0
    tie_weights: bool = False
    impl: str = "seqlab"  # seqlab | torch (see make_recurrent)
    # per-sequence masks inside each recurrent layer (seqlab.functional.regularisers)
    input_dropout: float = 0.0
    recurrent_dropout: float = 0.0
    weight_dropout: float = 0.0


class LanguageModel(nn.Module):
    """Recurrent next-token model: ``logits_t = W_out RNN(Emb(x_t), s_{t−1})``.

    ``forward(tokens (B, T), state=None, lengths=None, resets=None) -> (logits (B, T, V),
    state)``; feed the returned state (detached) with the next chunk for truncated BPTT.
    ``generate(prompt, max_len, temperature=0.8)`` samples a continuation (greedy without
    sampling options). Settings: :class:`LanguageModelConfig`; equations and shapes in the
    module docstring (``help(seqlab.models.language_model)``).
    """

    def __init__(self, config: LanguageModelConfig) -> None:
        super().__init__()
        c = self.config = config
        check_sizes(c, ("vocab_size", "embed_size", "hidden_size", "num_layers"))
        check_positive("vocab_size", c.vocab_size)
        if c.tie_weights and c.embed_size != c.hidden_size:
            raise ValueError(
                "tie_weights needs embed_size == hidden_size, "
                f"got {c.embed_size} vs {c.hidden_size}"
            )
        self.embed = nn.Embedding(c.vocab_size, c.embed_size)
        self.rnn = RecurrentEncoder(
            c.cell,
            c.embed_size,
            c.hidden_size,
            c.num_layers,
            False,
            c.dropout,
            c.impl,
            input_dropout=c.input_dropout,
            recurrent_dropout=c.recurrent_dropout,
            weight_dropout=c.weight_dropout,
        )
        self.drop = nn.Dropout(c.dropout)
        self.out = nn.Linear(c.hidden_size, c.vocab_size)
        if c.tie_weights:
            self.out.weight = self.embed.weight

    def start(self, batch_size: int, like: Tensor | None = None) -> State:
        """Zero state for ``batch_size`` rows."""
        like = like if like is not None else self.out.weight
        c = self.config
        return zero_state(c.cell, c.num_layers, batch_size, c.hidden_size, like)

    def forward(
        self,
        tokens: Tensor,
        state: State | None = None,
        lengths: Tensor | None = None,
        resets: Tensor | None = None,
        trace: bool = False,
    ) -> tuple[Tensor, State]:
        """Logits (B, T, V) and the state after each row's last valid step (and with
        ``trace=True`` the traces ``{"rnn": [per layer]}``: :class:`seqlab.inspection.Probe`).

        ``resets`` (B, T) bool zeroes row b's state just before step t where True (a new
        document starts there in a token stream, see :class:`seqlab.training.TokenStreams`).
        """
        if trace:  # every step's gates and states, (B, T, H) per layer·direction
            from seqlab.inspection.probe import trace_model

            (logits, state), traces = trace_model(self, tokens, state, lengths, resets)
            return logits, state, traces
        tokens = check_tokens("tokens", tokens, self.config.vocab_size)
        B, T = tokens.shape
        lengths = check_lengths(lengths, B, T, name="lengths")
        if state is None:
            state = self.start(B)
        x = self.drop(self.embed(tokens))
        if resets is None:
            out, state = self.rnn(x, lengths, state)
            return self.out(self.drop(out)), state
        if not isinstance(resets, Tensor) or resets.dtype != torch.bool:
            # ~ on an integer mask is a bitwise NOT (~1 == -2): it would scale, not reset.
            kind = resets.dtype if isinstance(resets, Tensor) else type(resets).__name__
            raise TypeError(f"resets must be a bool tensor (B, T), got {kind}")
        if resets.shape != (B, T):
            raise ValueError(f"resets must be (B, T) = {(B, T)}, got {tuple(resets.shape)}")
        if lengths is not None:
            raise ValueError("lengths must be None when resets are given (streams are unpadded)")
        # Split the window at every step where some row resets; zero those rows' state there.
        cuts = [0, *(t for t in range(1, T) if bool(resets[:, t].any())), T]
        outs = []
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            keep = (~resets[:, a]).to(x.dtype).view(1, B, 1)  # state is (L, B, H)
            state = _scale_state(state, keep)
            out, state = self.rnn(x[:, a:b], None, state)
            outs.append(out)
        return self.out(self.drop(torch.cat(outs, 1))), state

    def step(self, tokens: Tensor, state: State) -> tuple[Tensor, State]:
        """Decoding protocol: (B,) ids -> (logits (B, V), new state)."""
        logits, state = self(tokens.unsqueeze(1), state)
        return logits[:, 0], state

    def reorder_state(self, state: State, index: Tensor) -> State:
        return select_batch(state, index)

    def state_batch_size(self, state: State) -> int:
        return (state.h if hasattr(state, "h") else state).shape[1]

    def loss(self, batch: dict, state: Any = _NO_STATE) -> Tensor | tuple[Tensor, State]:
        """Mean per-token cross-entropy. Called as ``loss(batch)`` it returns the scalar;
        called as ``loss(batch, state)`` (the Trainer's TBPTT convention, state may be None)
        it returns ``(loss, new_state)`` for the next window."""
        carry = state is not _NO_STATE
        start = state if carry else batch.get("state")
        logits, new_state = self(batch["inputs"], start, batch.get("lengths"), batch.get("resets"))
        loss = sequence_cross_entropy(logits, batch["targets"], batch.get("lengths"))
        return (loss, new_state) if carry else loss

    @torch.no_grad()
    def generate(
        self,
        prompt: Tensor,
        max_len: int,
        strategy: str | None = None,
        eos: int | None = None,
        **kwargs,
    ) -> decoding.Decoded:
        """Continue ``prompt`` (B, P ≥ 1): the prompt's last token is the first decoder input.
        ``strategy`` is ``greedy``, ``sample`` (temperature/top_k/top_p/generator) or ``beam``
        (beam_size, length_penalty, n_best); left out, it is ``sample`` when a sampling
        option is given (``lm.generate(p, 80, temperature=0.8)``) and ``greedy`` otherwise;
        ``temperature=0`` is greedy (:func:`seqlab.decoding.pick_strategy`)."""
        strategy = decoding.pick_strategy(strategy, kwargs)
        prompt = check_tokens("prompt", prompt, self.config.vocab_size)
        if prompt.shape[1] < 1:
            raise ValueError("prompt must hold at least one token per row")
        state = self.start(prompt.shape[0])
        if prompt.shape[1] > 1:
            _, state = self(prompt[:, :-1], state)
        bos = prompt[:, -1]
        if strategy == "greedy":
            return decoding.greedy(self, state, bos, max_len, eos=eos, **kwargs)
        if strategy == "sample":
            return decoding.sample(self, state, bos, max_len, eos=eos, **kwargs)
        if strategy == "beam":
            return decoding.beam_search(self, state, bos, max_len, eos=eos, **kwargs)
        raise ValueError(f"strategy must be 'greedy', 'sample' or 'beam', got {strategy!r}")
