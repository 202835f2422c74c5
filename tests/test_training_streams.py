"""B parallel streams over one text, and per-row state resets at document boundaries."""

import pytest
import torch
from torch import nn

from seqlab.training import TokenStreams, forward_with_resets


def test_stream_layout_offsets_and_continuity():
    tokens = torch.arange(101)  # N = 101 -> 25 tokens per stream for B = 4
    s = TokenStreams(tokens, batch_size=4, seq_len=5)
    assert len(s) == 5 and s.offsets.tolist() == [0, 25, 50, 75]
    windows = list(s)
    for j, w in enumerate(windows):
        for b in range(4):
            start = 25 * b + 5 * j
            assert w["inputs"][b].tolist() == list(range(start, start + 5))
            assert w["targets"][b].tolist() == list(range(start + 1, start + 6))
        assert w["position"].tolist() == [25 * b + 5 * j for b in range(4)]
    # row b of window j + 1 starts right after row b of window j
    assert torch.equal(windows[1]["inputs"][:, 0], windows[0]["inputs"][:, -1] + 1)


def test_short_last_window_when_not_dropping():
    s = TokenStreams(torch.arange(23), batch_size=2, seq_len=4, drop_last=False)
    assert [w["inputs"].shape[1] for w in s] == [4, 4, 3]  # 11 tokens per stream


def test_document_boundaries_give_reset_flags():
    tokens = torch.tensor([9, 1, 2, 9, 3, 4, 5, 9, 6, 7, 8, 1, 2])
    s = TokenStreams(tokens, batch_size=2, seq_len=3, boundary_token=9)
    w0 = s.window(0)  # rows start at 0 and 6
    assert w0["inputs"].tolist() == [[9, 1, 2], [5, 9, 6]]
    assert w0["resets"].tolist() == [[True, False, False], [False, True, False]]
    s2 = TokenStreams(tokens, batch_size=2, seq_len=3, doc_starts=torch.tensor([4]))
    assert s2.window(1)["resets"].tolist() == [[False, True, False], [False, False, False]]


@pytest.mark.parametrize("n", [0, 1, 5])
def test_zero_length_stream_is_refused(n):
    with pytest.raises(ValueError, match="zero-length"):
        TokenStreams(torch.arange(n), batch_size=4, seq_len=3)


def test_bad_arguments_name_the_argument():
    with pytest.raises(TypeError, match="tokens"):
        TokenStreams(torch.zeros(3, 3), batch_size=1, seq_len=1)
    with pytest.raises(ValueError, match="seq_len"):
        TokenStreams(torch.arange(10), batch_size=1, seq_len=0)


def test_forward_with_resets_equals_running_each_document_alone():
    gru = nn.GRU(3, 6, batch_first=True)
    B, T = 3, 10
    x = torch.randn(B, T, 3)
    resets = torch.zeros(B, T, dtype=torch.bool)
    resets[0, 4] = resets[2, 2] = resets[2, 7] = True
    h0 = torch.randn(1, B, 6)
    out, h = forward_with_resets(gru, x, h0, resets, time_dim=1, state_batch_dim=1)
    # oracle: each row alone, its own documents from zeros (the first from h0)
    for b in range(B):
        cuts = [0, *resets[b].nonzero().flatten().tolist(), T]
        hb, pieces = h0[:, b : b + 1], []
        for i, (s, e) in enumerate(zip(cuts[:-1], cuts[1:], strict=True)):
            if i > 0:
                hb = torch.zeros_like(hb)
            o, hb = gru(x[b : b + 1, s:e], hb)
            pieces.append(o)
        torch.testing.assert_close(out[b : b + 1], torch.cat(pieces, 1), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(h[:, b : b + 1], hb, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="resets"):
        forward_with_resets(gru, x, h0, resets[:, :4])
