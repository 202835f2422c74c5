"""One lengths rule (1..T) at every public entry point, one check_lengths, one detach_state."""

from __future__ import annotations

import pytest
import torch

import seqlab
from seqlab import functional, models, training
from seqlab.models import LanguageModel, LanguageModelConfig

RULE = r"lengths: expected values in 1\.\.4 \(the number of time steps\), got min 0, max 4"


def entry_points():
    x = torch.randn(3, 4, 2)  # (B, T, I) batch first
    layer = seqlab.GRU(2, 3, batch_first=True)
    rec = seqlab.Recurrent(seqlab.GRUCell(2, 3), batch_first=True)
    custom = seqlab.Recurrent(seqlab.cells.Cell("gru", 2, 3), batch_first=True)
    lm = LanguageModel(LanguageModelConfig(vocab_size=5, embed_size=2, hidden_size=3))
    tokens = torch.zeros(3, 4, dtype=torch.long)
    return {
        "layer": lambda n: layer(x, lengths=n),
        "recurrent": lambda n: rec(x, lengths=n),
        "generic cell": lambda n: custom(x, lengths=n),
        "language model": lambda n: lm(tokens, lengths=n),
    }


@pytest.mark.parametrize("where", list(entry_points()))
def test_same_rule_everywhere(where):
    run = entry_points()[where]
    with pytest.raises(ValueError, match=RULE):
        run(torch.tensor([4, 0, 2]))
    with pytest.raises(ValueError, match=r"got min 1, max 5"):
        run(torch.tensor([4, 1, 5]))
    with pytest.raises(TypeError, match="integer"):
        run(torch.tensor([4.0, 1.0, 2.0]))
    run(torch.tensor([4, 1, 2]))  # 1..T accepted


def test_one_detach_state():
    assert seqlab.detach_state is training.detach_state is models.detach_state
    assert models.detach_state is functional.detach_state
    h = torch.ones(2, 3, requires_grad=True) * 2
    state = seqlab.LSTMState(h, h + 1)
    out = seqlab.detach_state(state)
    assert isinstance(out, seqlab.LSTMState) and not out.h.requires_grad
    assert torch.equal(out.c, torch.full((2, 3), 3.0))
    assert seqlab.detach_state(None) is None
