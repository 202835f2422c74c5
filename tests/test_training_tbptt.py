"""Truncated BPTT: windows, gradients vs full BPTT and a hand-written loop, flat memory."""

import pytest
import torch
from torch import nn

import seqlab
from seqlab.training import TBPTT, TrainConfig, chunked_forward, detach_state, tbptt_backward
from seqlab.training.tbptt import reset_rows


class Seq(nn.Module):
    """GRU + linear head on batch-first data; loss_fn carries the state."""

    def __init__(self, cls=nn.GRU, I=3, H=8):
        super().__init__()
        self.rnn = cls(I, H, batch_first=True)
        self.head = nn.Linear(H, 1)


def loss_fn(model, batch, state):
    out, state = model.rnn(batch["x"], state)
    return (model.head(out).squeeze(-1) - batch["y"]).pow(2).mean(), state


def grads(model):
    return [p.grad.clone() for p in model.parameters()]


def make_batch(B=2, T=12, I=3):
    return {"x": torch.randn(B, T, I), "y": torch.randn(B, T)}


def test_windows_cover_sequence_and_respect_k2():
    assert TBPTT(4).windows(10) == [(0, 0, 4), (4, 4, 8), (8, 8, 10)]
    assert TBPTT(5, 2).windows(12) == [(0, 3, 5), (5, 8, 10), (10, 10, 12)]


def test_k1_equals_k2_equals_T_is_full_bptt():
    model, batch = Seq(), make_batch(T=12)
    loss, _ = loss_fn(model, batch, None)
    loss.backward()
    full = grads(model)
    model.zero_grad()
    losses, _ = tbptt_backward(loss_fn, model, batch, None, TBPTT(12, 12))
    assert losses == [pytest.approx(float(loss.detach()))]
    for a, b in zip(grads(model), full, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_tbptt_k_matches_hand_written_detached_loop_and_differs_from_full():
    model, batch = Seq(), make_batch(T=12)
    # oracle: by hand, three 4-step chunks, state detached between them
    h = None
    for s in range(0, 12, 4):
        part = {k: v[:, s : s + 4] for k, v in batch.items()}
        out, h = model.rnn(part["x"], h)
        ((model.head(out).squeeze(-1) - part["y"]).pow(2).mean()).backward()
        h = h.detach()
    oracle = grads(model)
    model.zero_grad()
    tbptt_backward(loss_fn, model, batch, None, TBPTT(4))
    for a, b in zip(grads(model), oracle, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    # truncation matters: the recurrent weight's gradient differs from full BPTT's
    model.zero_grad()
    full_losses, _ = tbptt_backward(loss_fn, model, batch, None, TBPTT(12))
    assert not torch.allclose(model.rnn.weight_hh_l0.grad, oracle[1], atol=1e-6)


def test_k2_smaller_than_k1_gradient_reaches_only_last_k2_steps():
    model, batch = Seq(), make_batch(T=12)
    x = batch["x"].clone().requires_grad_(True)
    batch = {"x": x, "y": batch["y"]}
    _, final = tbptt_backward(loss_fn, model, batch, None, TBPTT(6, 2))
    touched = (x.grad.abs().sum(dim=(0, 2)) > 0).nonzero().flatten().tolist()
    assert touched == [4, 5, 10, 11]  # the last 2 steps of each 6-step window
    # the no-grad prefix still advances the state: final state equals a full forward
    _, h_full = model.rnn(batch["x"].detach())
    torch.testing.assert_close(final, h_full)
    assert final.grad_fn is None


@pytest.mark.parametrize("cls", [nn.GRU, nn.LSTM, seqlab.GRU, seqlab.LSTM, seqlab.RNN])
@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_chunked_forward_equals_full_forward(cls, chunk):
    rnn = cls(3, 5, num_layers=2)
    x = torch.randn(17, 2, 3)  # (T, B, I)
    full, full_state = rnn(x)
    pieces = list(chunked_forward(rnn, x, chunk))
    torch.testing.assert_close(torch.cat([p[0] for p in pieces]), full, rtol=1e-5, atol=1e-6)
    last = pieces[-1][1]
    for a, b in zip(
        last if isinstance(last, tuple) else (last,),
        full_state if isinstance(full_state, tuple) else (full_state,),
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        assert a.grad_fn is None  # carried state is detached


def _graph_size(t: torch.Tensor) -> int:
    seen, stack = set(), [t.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        stack.extend(nxt for nxt, _ in fn.next_functions)
    return len(seen)


def test_graph_stays_flat_over_1000_chunks():
    torch.set_num_threads(1)
    model = Seq(H=4)
    batch = make_batch(B=2, T=2000, I=3)  # 1000 windows of 2 steps
    sizes = []
    tbptt_backward(
        loss_fn, model, batch, None, TBPTT(2), after_window=lambda loss: sizes.append(
            _graph_size(loss))
    )  # fmt: skip
    assert len(sizes) == 1000
    # window 0 starts from state None (no h0 input node); every later window is identical
    assert len(set(sizes[1:])) == 1, sorted(set(sizes))
    assert sizes[-1] <= sizes[0] + 2


def test_graph_grows_without_detach_control():
    # the measurement can fail: carrying an undetached state makes the graph grow
    model, batch = Seq(H=4), make_batch(B=2, T=10)
    h, sizes = None, []
    for s in range(0, 10, 2):
        loss, h = loss_fn(model, {k: v[:, s : s + 2] for k, v in batch.items()}, h)
        sizes.append(_graph_size(loss))
    assert sizes == sorted(sizes) and sizes[-1] > sizes[1] + 10


def test_detach_state_and_reset_rows():
    h = torch.randn(1, 3, 4, requires_grad=True) * 2
    c = torch.randn(1, 3, 4, requires_grad=True) * 2
    d = detach_state((h, c))
    assert all(t.grad_fn is None for t in d) and torch.equal(d[0], h)
    assert detach_state(None) is None
    r = reset_rows((h, c), torch.tensor([False, True, False]))
    assert torch.equal(r[0][0, 1], torch.zeros(4)) and torch.equal(r[0][:, 0], h[:, 0])
    with pytest.raises(ValueError, match="mask"):
        reset_rows(h, torch.tensor([True, False]))


@pytest.mark.parametrize(
    ("k1", "k2", "err", "word"),
    [(0, None, ValueError, "k1"), (-3, None, ValueError, "k1"), (4, 0, ValueError, "k2"),
     (2, 3, ValueError, "k2"), (2.5, None, TypeError, "k1")],
)  # fmt: skip
def test_bad_k1_k2_are_refused_by_name(k1, k2, err, word):
    with pytest.raises(err, match=word):
        TBPTT(k1, k2)


@pytest.mark.parametrize("field", ["tbptt_k1", "tbptt_k2", "grad_accum", "max_steps"])
def test_train_config_refuses_non_positive(field):
    kw = {"tbptt_k1": 4} if field == "tbptt_k2" else {}
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{**kw, field: 0}).validate()


def test_batch_without_sequences_or_mismatched_lengths_is_refused():
    tb = TBPTT(3)
    with pytest.raises(ValueError, match="disagree"):
        tb.length({"x": torch.zeros(2, 5, 1), "y": torch.zeros(2, 4)})
    with pytest.raises(ValueError, match="no sequence"):
        tb.length({"label": torch.zeros(2)})
    with pytest.raises(ValueError, match="at least 1"):
        tb.windows(0)
