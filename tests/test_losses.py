import pytest
import torch
import torch.nn.functional as F

from seqlab.losses import lengths_to_mask, sequence_cross_entropy, sequence_mse


def _padded_batch(V=7, lengths=(5, 2, 4, 1)):
    B, T = len(lengths), max(lengths)
    logits = torch.randn(B, T, V, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, V, (B, T))
    lengths = torch.tensor(lengths)
    # Garbage in the padding: out-of-range ids must be ignored, not crash.
    pad = ~lengths_to_mask(lengths, T)
    targets = targets.masked_fill(pad, -100)
    return logits, targets, lengths


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_masked_cross_entropy_equals_unpadded(smoothing):
    logits, targets, lengths = _padded_batch()
    rows_logits = torch.cat([logits[b, :n] for b, n in enumerate(lengths.tolist())])
    rows_targets = torch.cat([targets[b, :n] for b, n in enumerate(lengths.tolist())])
    ref_sum = F.cross_entropy(rows_logits, rows_targets, reduction="sum", label_smoothing=smoothing)
    ref_mean = F.cross_entropy(rows_logits, rows_targets, label_smoothing=smoothing)
    got_sum = sequence_cross_entropy(
        logits, targets, lengths, reduction="sum", label_smoothing=smoothing
    )
    got_mean = sequence_cross_entropy(logits, targets, lengths, label_smoothing=smoothing)
    torch.testing.assert_close(got_sum, ref_sum)
    torch.testing.assert_close(got_mean, ref_mean)
    # Gradients match too, and padded steps get exactly zero gradient.
    (g,) = torch.autograd.grad(got_mean, logits)
    (g_ref,) = torch.autograd.grad(ref_mean, logits)
    torch.testing.assert_close(g, g_ref)
    pad = ~lengths_to_mask(lengths, logits.shape[1])
    assert torch.all(g[pad] == 0)


def test_cross_entropy_per_step_and_mask_argument():
    logits, targets, lengths = _padded_batch()
    mask = lengths_to_mask(lengths, logits.shape[1])
    per_step = sequence_cross_entropy(logits, targets, mask=mask, reduction="none")
    assert per_step.shape == targets.shape
    assert torch.all(per_step[~mask] == 0)
    b, t = 0, 3
    ref = F.cross_entropy(logits[b, t : t + 1], targets[b, t : t + 1])
    torch.testing.assert_close(per_step[b, t], ref)


def test_masked_mse_equals_unpadded():
    lengths = torch.tensor([3, 5, 1])
    pred = torch.randn(3, 5, 2, dtype=torch.float64)
    target = torch.randn(3, 5, 2, dtype=torch.float64)
    rows_p = torch.cat([pred[b, :n] for b, n in enumerate(lengths.tolist())])
    rows_t = torch.cat([target[b, :n] for b, n in enumerate(lengths.tolist())])
    torch.testing.assert_close(sequence_mse(pred, target, lengths), F.mse_loss(rows_p, rows_t))
    torch.testing.assert_close(
        sequence_mse(pred, target, lengths, reduction="sum"),
        F.mse_loss(rows_p, rows_t, reduction="sum"),
    )
    # Scalar-per-step targets (B, T) work too.
    p1, t1 = pred[..., 0], target[..., 0]
    ref = F.mse_loss(rows_p[:, 0], rows_t[:, 0])
    torch.testing.assert_close(sequence_mse(p1, t1, lengths), ref)


def test_no_lengths_means_all_steps():
    logits = torch.randn(2, 3, 4)
    targets = torch.randint(0, 4, (2, 3))
    ref = F.cross_entropy(logits.reshape(-1, 4), targets.reshape(-1))
    torch.testing.assert_close(sequence_cross_entropy(logits, targets), ref)


def test_bad_input_names_argument():
    logits = torch.randn(2, 3, 4)
    targets = torch.randint(0, 4, (2, 3))
    with pytest.raises(ValueError, match="lengths"):
        sequence_cross_entropy(logits, targets, torch.tensor([3, 4]))
    with pytest.raises(ValueError, match="lengths"):
        sequence_cross_entropy(logits, targets, torch.tensor([3]))
    with pytest.raises(ValueError, match="targets"):
        sequence_cross_entropy(logits, torch.full((2, 3), 4))
    with pytest.raises(ValueError, match="targets"):
        sequence_cross_entropy(logits, targets[:, :2])
    with pytest.raises(ValueError, match="reduction"):
        sequence_cross_entropy(logits, targets, reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing"):
        sequence_cross_entropy(logits, targets, label_smoothing=1.0)
    with pytest.raises(ValueError, match="target"):
        sequence_mse(torch.randn(2, 3), torch.randn(2, 4))
    with pytest.raises(ValueError, match="mask"):
        sequence_mse(torch.randn(2, 3), torch.randn(2, 3), mask=torch.ones(3, 2, dtype=bool))
