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
optional ``lengths`` (B,) and ``state``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from seqlab import decoding
from seqlab.losses import sequence_cross_entropy
from seqlab.models._checks import check_lengths, check_positive, check_tokens
from seqlab.models.encoders import RecurrentEncoder, State, select_batch, zero_state


@dataclass
class LanguageModelConfig:
    vocab_size: int
    embed_size: int = 64
    hidden_size: int = 128
    num_layers: int = 1
    cell: str = "lstm"
    dropout: float = 0.0
    tie_weights: bool = False


class LanguageModel(nn.Module):
    def __init__(self, config: LanguageModelConfig) -> None:
        super().__init__()
        c = self.config = config
        check_positive("vocab_size", c.vocab_size)
        if c.tie_weights and c.embed_size != c.hidden_size:
            raise ValueError(
                "tie_weights needs embed_size == hidden_size, "
                f"got {c.embed_size} vs {c.hidden_size}"
            )
        self.embed = nn.Embedding(c.vocab_size, c.embed_size)
        self.rnn = RecurrentEncoder(
            c.cell, c.embed_size, c.hidden_size, c.num_layers, False, c.dropout
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
        self, tokens: Tensor, state: State | None = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, State]:
        tokens = check_tokens("tokens", tokens, self.config.vocab_size)
        lengths = check_lengths("lengths", lengths, tokens.shape[0], tokens.shape[1])
        if state is None:
            state = self.start(tokens.shape[0])
        out, state = self.rnn(self.drop(self.embed(tokens)), lengths, state)
        return self.out(self.drop(out)), state

    def step(self, tokens: Tensor, state: State) -> tuple[Tensor, State]:
        """Decoding protocol: (B,) ids -> (logits (B, V), new state)."""
        logits, state = self(tokens.unsqueeze(1), state)
        return logits[:, 0], state

    def reorder_state(self, state: State, index: Tensor) -> State:
        return select_batch(state, index)

    def state_batch_size(self, state: State) -> int:
        return (state.h if hasattr(state, "h") else state).shape[1]

    def loss(self, batch: dict) -> Tensor:
        logits, _ = self(batch["inputs"], batch.get("state"), batch.get("lengths"))
        return sequence_cross_entropy(logits, batch["targets"], batch.get("lengths"))

    @torch.no_grad()
    def generate(
        self,
        prompt: Tensor,
        max_len: int,
        strategy: str = "greedy",
        eos: int | None = None,
        **kwargs,
    ) -> decoding.Decoded:
        """Continue ``prompt`` (B, P ≥ 1): the prompt's last token is the first decoder input.
        ``strategy`` is ``greedy``, ``sample`` (temperature/top_k/top_p/generator) or ``beam``
        (beam_size, length_penalty, n_best)."""
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
