"""One-to-many: one conditioning vector in (e.g. image features), a token sequence out.

Condition v (B, K) enters through the initial state and/or the inputs:

    s_0 = tanh(W_s v) for every layer          if ``init_state`` (else zeros)
    u_t = W_u v   if condition == "every" or (condition == "first" and t = 0), else 0
    f_t = Emb(y_{t−1}) (y_0 = BOS)             if feedback == "previous"
        = 0                                    if feedback == "zeros"
    x_t = [u_t; f_t];  (o_t, s_t) = Cell(x_t, s_{t−1});  logits_t = W_out o_t

``feedback="zeros"`` is the seeds' "after step 1 the input is zeros": the sequence is
unrolled from the condition alone. ``feedback="previous"`` feeds the previous output token
back (teacher-forced with the gold token during training, the model's own at generation).

=========  ===========  ==============================
name       shape        meaning
=========  ===========  ==============================
cond       (B, K)       conditioning vector v
tgt_in     (B, T)       BOS + y_1..y_{T−1} (fed back)
logits     (B, T, V)    scores for y_1..y_T
=========  ===========  ==============================

Batch convention for ``loss``: ``cond`` (B, K), ``tgt`` (B, T+1) = [bos, y…, eos, pad…],
optional ``tgt_lengths`` (B,) counting BOS and EOS (as in :mod:`seqlab.models.seq2seq`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from seqlab import decoding
from seqlab.losses import sequence_cross_entropy
from seqlab.models._checks import check_choice, check_positive, check_tokens
from seqlab.models.encoders import CellStack, State, select_batch, state_from_h
from seqlab.sizes import check_sizes
from seqlab.validation import check_lengths

FEEDBACKS = ("previous", "zeros")
CONDITIONS = ("first", "every", "none")


@dataclass
class GeneratorConfig:
    cond_size: int
    vocab_size: int
    embed_size: int = 32
    hidden_size: int = 64
    num_layers: int = 1
    cell: str = "gru"
    feedback: str = "previous"
    condition: str = "first"
    init_state: bool = True
    dropout: float = 0.0
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2


class GeneratorState(NamedTuple):
    rnn: State
    cond: Tensor  # W_u v, (B, E)
    t: Tensor  # steps taken so far, (B,)


class Generator(nn.Module):
    """One-to-many: a conditioning vector v (B, K) in, a token sequence out.

    v enters through the initial state ``s_0 = tanh(W_s v)`` and/or the inputs ``u_t = W_u
    v``; the previous output token (or zeros) is fed back. ``forward(cond, tgt_in) ->
    logits (B, T, V)``; ``generate(cond, max_len, strategy)`` decodes. Settings:
    :class:`GeneratorConfig`; equations in the module docstring.
    """

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        c = self.config = config
        check_sizes(c, ("cond_size", "vocab_size", "embed_size", "hidden_size", "num_layers"))
        check_choice("feedback", c.feedback, FEEDBACKS)
        check_choice("condition", c.condition, CONDITIONS)
        check_positive("cond_size", c.cond_size)
        if c.condition == "none" and not c.init_state:
            raise ValueError("condition='none' with init_state=False ignores the condition")
        self.embed = nn.Embedding(c.vocab_size, c.embed_size, padding_idx=c.pad_id)
        self.cond_in = nn.Linear(c.cond_size, c.embed_size)
        if c.init_state:
            self.cond_state = nn.Linear(c.cond_size, c.hidden_size)
        self.rnn = CellStack(c.cell, 2 * c.embed_size, c.hidden_size, c.num_layers, c.dropout)
        self.drop = nn.Dropout(c.dropout)
        self.out = nn.Linear(c.hidden_size, c.vocab_size)

    def start(self, cond: Tensor) -> GeneratorState:
        c = self.config
        if not isinstance(cond, Tensor) or cond.dim() != 2 or cond.shape[1] != c.cond_size:
            shape = tuple(cond.shape) if isinstance(cond, Tensor) else type(cond).__name__
            raise ValueError(f"cond must be (B, cond_size={c.cond_size}), got {shape}")
        B = cond.shape[0]
        if c.init_state:
            h = torch.tanh(self.cond_state(cond)).expand(c.num_layers, -1, -1).contiguous()
            rnn = state_from_h(c.cell, h)
        else:
            rnn = self.rnn.initial_state(B, cond)
        t = torch.zeros(B, dtype=torch.long, device=cond.device)
        return GeneratorState(rnn, self.cond_in(cond), t)

    def step(self, tokens: Tensor, state: GeneratorState) -> tuple[Tensor, GeneratorState]:
        """Decoding protocol: previous tokens (B,) -> (logits (B, V), new state)."""
        c = self.config
        tokens = check_tokens("tokens", tokens, c.vocab_size, dims=1)
        u = state.cond if c.condition != "none" else torch.zeros_like(state.cond)
        if c.condition == "first":  # only at t = 0
            u = u * (state.t == 0).unsqueeze(1).to(u.dtype)
        f = self.embed(tokens)
        if c.feedback == "zeros":
            f = torch.zeros_like(f)
        o, rnn = self.rnn.step(self.drop(torch.cat([u, f], -1)), state.rnn)
        return self.out(self.drop(o)), GeneratorState(rnn, state.cond, state.t + 1)

    def reorder_state(self, state: GeneratorState, index: Tensor) -> GeneratorState:
        return GeneratorState(
            select_batch(state.rnn, index), state.cond.index_select(0, index), state.t[index]
        )

    def state_batch_size(self, state: GeneratorState) -> int:
        return state.cond.shape[0]

    def forward(self, cond: Tensor, tgt_in: Tensor, trace: bool = False):
        """Teacher-forced logits (B, T, V); with feedback='zeros' only T = tgt_in.shape[1]
        is used. ``trace=True``: ``(logits, {"rnn": [trace per layer]})``."""
        if trace:  # every step's gates and states, (B, T, H) per layer·direction
            from seqlab.inspection.probe import trace_model

            return trace_model(self, cond, tgt_in)
        tgt_in = check_tokens("tgt_in", tgt_in, self.config.vocab_size)
        state = self.start(cond)
        if tgt_in.shape[0] != cond.shape[0]:
            raise ValueError(f"tgt_in batch {tgt_in.shape[0]} != cond batch {cond.shape[0]}")
        logits = []
        for t in range(tgt_in.shape[1]):
            z, state = self.step(tgt_in[:, t], state)
            logits.append(z)
        return torch.stack(logits, 1)

    def loss(self, batch: dict) -> Tensor:
        tgt, n = batch["tgt"], batch.get("tgt_lengths")
        logits = self(batch["cond"], tgt[:, :-1])
        lengths = None if n is None else check_lengths(n, *tgt.shape, name="tgt_lengths") - 1
        return sequence_cross_entropy(logits, tgt[:, 1:], lengths)

    @torch.no_grad()
    def generate(self, cond: Tensor, max_len: int = 20, strategy: str = "greedy", **kwargs):
        """``strategy``: greedy, sample (temperature/top_k/top_p) or beam (beam_size ...)."""
        c = self.config
        state = self.start(cond)
        fn = {"greedy": decoding.greedy, "sample": decoding.sample, "beam": decoding.beam_search}
        if strategy not in fn:
            raise ValueError(f"strategy must be one of {tuple(fn)}, got {strategy!r}")
        return fn[strategy](self, state, c.bos_id, max_len, eos=c.eos_id, pad=c.pad_id, **kwargs)
