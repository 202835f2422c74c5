import pytest
import torch

from seqlab.functional.cells import LSTMState
from seqlab.models.encoders import CellStack, RecurrentEncoder


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_cell_stack_steps_equal_torch_layer(cell):
    """CellStack (one step at a time) == torch.nn multi-layer layer with the same weights."""
    stack = CellStack(cell, 3, 5, num_layers=2)
    ref = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](
        3, 5, num_layers=2, batch_first=True
    )
    with torch.no_grad():
        for layer, c in enumerate(stack.cells):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(ref, f"{name}_l{layer}").copy_(getattr(c, name))
    x = torch.randn(2, 4, 3)
    want, want_final = ref(x)
    state = stack.initial_state(2, x)
    for t in range(4):
        y, state = stack.step(x[:, t], state)
        torch.testing.assert_close(y, want[:, t])
    if cell == "lstm":
        assert isinstance(state, LSTMState)
        torch.testing.assert_close(state.c, want_final[1])
        state = state.h
        want_final = want_final[0]
    torch.testing.assert_close(state, want_final)


def test_recurrent_encoder_lengths_and_default_state():
    enc = RecurrentEncoder("gru", 3, 4, num_layers=2, bidirectional=True)
    x = torch.randn(3, 5, 3)
    lengths = torch.tensor([5, 1, 3])
    out, final = enc(x, lengths)
    assert out.shape == (3, 5, 8) and final.shape == (4, 3, 4)
    assert torch.all(out[1, 1:] == 0)
    one, one_final = enc(x[2:, :3])
    torch.testing.assert_close(out[2:, :3], one)
    torch.testing.assert_close(final[:, 2:], one_final)
    with pytest.raises(ValueError, match="cell"):
        RecurrentEncoder("elman", 3, 4)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_torch_impl_has_the_same_parameters_and_outputs_with_lengths(cell):
    seq = RecurrentEncoder(cell, 3, 5, num_layers=2, bidirectional=True)
    tch = RecurrentEncoder(cell, 3, 5, num_layers=2, bidirectional=True, impl="torch")
    assert isinstance(tch.rnn, torch.nn.RNNBase)
    assert seq.state_dict().keys() == tch.state_dict().keys()
    tch.load_state_dict(seq.state_dict())
    x = torch.randn(3, 6, 3)
    lengths = torch.tensor([6, 2, 4])
    (a, fa), (b, fb) = seq(x, lengths), tch(x, lengths)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert torch.all(b[1, 2:] == 0)
    for sa, sb in zip(fa if cell == "lstm" else [fa], fb if cell == "lstm" else [fb], strict=True):
        torch.testing.assert_close(sa, sb, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="impl"):
        RecurrentEncoder(cell, 3, 5, impl="cuda")
