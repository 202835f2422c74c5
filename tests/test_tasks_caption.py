"""Digit-strip captioning: the digits loader on the installed file, strip composition, the
attention decoder's consistency checks, and the ``caption`` task through the real CLI."""

import json
from collections import Counter

import pytest
import torch
from click.testing import CliRunner

from seqlab.cli import main
from seqlab.data import BOS
from seqlab.data.series import digits
from seqlab.tasks.caption import (
    WORDS,
    CaptionConfig,
    CaptionTask,
    batch_strips,
    caption,
    compose,
    scores,
    split_images,
)


def cli(*args, ok=True):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_digits_loader_reads_the_installed_file():
    images, labels = digits()
    assert images.shape == (1797, 8, 8) and labels.shape == (1797,)
    counts = Counter(labels.tolist())
    assert set(counts) == set(range(10)) and min(counts.values()) >= 170
    # the file's first row: 0,0,5,13,9,1,0,0, ... label 0
    assert (images[0, 0] * 16).tolist() == [0, 0, 5, 13, 9, 1, 0, 0] and labels[0] == 0
    assert images.min() == 0.0 and images.max() == 1.0


def test_images_are_split_before_strips_are_composed():
    images, labels = digits()
    train, valid, test = split_images(1797, seed=0)
    assert not set(train) & set(test) and not set(valid) & set(test)
    assert len(train) + len(valid) + len(test) == 1797
    g = torch.Generator().manual_seed(0)
    strips = compose(images, labels, test, 50, 2, 5, g)
    for strip, words, idx in strips:
        assert set(idx) <= set(test) and 2 <= len(idx) <= 5
        assert strip.shape == (8, 8 * len(idx))
        assert words == [WORDS[int(labels[i])] for i in idx]
        for k, i in enumerate(idx):  # the strip is the images side by side
            assert torch.equal(strip[:, 8 * k : 8 * k + 8], images[i])
    assert {len(w) for _, w, _ in strips} == {2, 3, 4, 5}
    with pytest.raises(ValueError, match="expected 1 <= min <= max, got 4, 2"):
        compose(images, labels, test, 1, 4, 2, g)


def model(feedback="previous", cell="gru"):
    torch.manual_seed(0)
    cfg = CaptionConfig(channels=3, embed=6, hidden=5, dropout=0.0, feedback=feedback, model=cell)
    return CaptionTask().build(cfg, len(WORDS) + 4).eval()


@pytest.mark.parametrize(("feedback", "cell"), [("previous", "gru"), ("zeros", "lstm")])
def test_stepwise_decoding_matches_teacher_forcing_and_padding_is_ignored(feedback, cell):
    m = model(feedback, cell)
    g = torch.Generator().manual_seed(1)
    wide, narrow = torch.rand(8, 32, generator=g), torch.rand(8, 16, generator=g)
    x, w = batch_strips([wide, narrow])
    tgt_in = torch.tensor([[BOS, 5, 6, 7], [BOS, 8, 9, 4]])
    full, alpha = m(x, w, tgt_in)
    state = m.start(x, w)
    for t in range(4):
        logits, state = m.step(tgt_in[:, t], state)
        torch.testing.assert_close(logits, full[:, t], rtol=1e-5, atol=1e-6)
    # the narrow strip alone (no padding) decodes exactly as inside the padded batch
    alone, alpha_alone = m(narrow[None], torch.tensor([16]), tgt_in[1:])
    torch.testing.assert_close(alone[0], full[1], rtol=1e-5, atol=1e-6)
    assert alpha[1, :, 16:].abs().max() == 0.0  # no attention on padding columns
    torch.testing.assert_close(alpha.sum(-1), torch.ones(2, 4))


def test_zeros_feedback_ignores_the_fed_back_words():
    m = model("zeros")
    x, w = batch_strips([torch.rand(8, 24)])
    a, _ = m(x, w, torch.tensor([[BOS, 5, 6, 7]]))
    b, _ = m(x, w, torch.tensor([[BOS, 9, 4, 11]]))
    torch.testing.assert_close(a, b)
    p = model("previous")
    c, _ = p(x, w, torch.tensor([[BOS, 5, 6, 7]]))
    d, _ = p(x, w, torch.tensor([[BOS, 9, 4, 11]]))
    torch.testing.assert_close(c[:, 0], d[:, 0])  # step 1 reads BOS in both
    assert not torch.allclose(c[:, 1:], d[:, 1:])


def test_greedy_caption_is_argmax_of_steps():
    m = model()
    vocab = CaptionTask.vocab()
    strip = torch.rand(8, 24)
    (out,) = caption(m, vocab, [strip])
    x, w = batch_strips([strip])
    state, tok, ref = m.start(x, w), torch.tensor([BOS]), []
    for _ in range(9):
        logits, state = m.step(tok, state)
        tok = logits.argmax(-1)
        if vocab.itos[int(tok)] == "<eos>":
            break
        ref.append(vocab.itos[int(tok)])
    assert out == ref


def test_scores_per_length():
    refs = [["one", "two"], ["three", "four"], ["five", "six", "seven"]]
    hyps = [["one", "two"], ["three"], ["five", "six", "seven"]]
    got = scores(hyps, refs, 2, 3)
    assert got["exact"] == pytest.approx(2 / 3)
    assert got["exact_len2"] == 0.5 and got["exact_len3"] == 1.0
    assert got["wer"] == pytest.approx(1 / 7)


TINY = ["--set", "hidden=8", "--set", "channels=4", "--set", "embed=8", "--set", "eval_every=2",
        "--set", "valid_strips=20", "--set", "test_strips=30", "--set", "strips_per_epoch=64",
        "--set", "batch_size=16", "--threads", 1, "-q"]  # fmt: skip


def test_caption_train_evaluate_predict(tmp_path):
    cli("train", "caption", *TINY, "--max-steps", 3, "--runs-dir", tmp_path / "runs")
    (run,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test_strips"] == 30 and 0.0 <= summary["test_exact"] <= 1.0
    assert {"test_beam3_exact", "test_exact_len2", "test_exact_len5"} <= set(summary)
    assert (run / "attention.png").is_file() and (run / "loss.png").is_file()
    assert (run / "grad_through_time.png").is_file()
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    spans = [e for e in events if e["kind"] == "memory"]
    assert [e["step"] for e in spans] == [2]  # eval_every=2 within 3 steps
    assert 0 <= spans[0]["memory_span"] <= 6 and (run / "memory_span.png").is_file()  # ≤ 6 words
    out = json.loads(cli("evaluate", run, "--json").output)
    assert out["test_exact"] == pytest.approx(summary["test_exact"])
    assert out["test_beam3_exact"] == pytest.approx(summary["test_beam3_exact"])
    lines = cli("predict", run, "729", "05", "--beam", 2).output.splitlines()
    assert [ln.split("\t")[0] for ln in lines] == ["729", "05"]
    _, test_pool, labels = *split_images(1797, 0)[1:], digits()[1]
    for line in lines:
        text, words, idx = line.split("\t")
        assert set(words.split()) <= set(WORDS)
        idx = [int(i) for i in idx.split(",")]
        assert set(idx) <= set(test_pool) and [str(int(labels[i])) for i in idx] == list(text)
    r = cli("predict", run, "7a2", ok=False)
    assert r.exit_code == 1 and "expected 1-8 digits like 729, got '7a2'" in r.output


def test_caption_bad_settings(tmp_path):
    runs = tmp_path / "runs"
    r = cli("train", "caption", "--set", "feedback=none", "--runs-dir", runs, ok=False)
    assert r.exit_code == 1 and "feedback: expected one of previous, zeros, got 'none'" in r.output
    r = cli("train", "caption", "--model", "transformer", "--runs-dir", runs, ok=False)
    assert "model: unknown 'transformer' for task caption" in r.output
    r = cli("train", "caption", "--set", "min_digits=4", "--set", "max_digits=2",
            "--runs-dir", runs, ok=False)  # fmt: skip
    assert "expected 1 <= min <= max, got 4, 2" in r.output


def test_digits_package_is_found_by_its_import_name_and_named_by_its_distribution(monkeypatch):
    import importlib.util

    from seqlab.data import DataPackageMissing, get_info, locate

    info = get_info("digits")
    assert (info.package, info.module) == ("scikit-learn", "sklearn")
    assert locate("digits")[0].name == "digits.csv.gz"
    asked = []
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: asked.append(name))
    with pytest.raises(DataPackageMissing, match=r"pip install --no-deps scikit-learn==1\.9\.1"):
        locate("digits")
    assert asked == ["sklearn"]


def test_training_jitter_moves_rows_and_appends_blank_columns():
    from seqlab.tasks.caption import _jitter

    image = torch.arange(1.0, 65.0).reshape(8, 8)
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(60):
        out = _jitter(image, g, shift=1, gap=2)
        assert out.shape[0] == 8 and 8 <= out.shape[1] <= 10
        assert out[:, 8:].abs().sum() == 0  # the appended gap is blank
        block = out[:, :8]
        candidates = {
            0: image,
            1: torch.cat([torch.zeros(1, 8), image[:7]]),  # moved down one row
            -1: torch.cat([image[1:], torch.zeros(1, 8)]),  # moved up one row
        }
        (dy,) = [d for d, c in candidates.items() if torch.equal(block, c)]
        seen.add((dy, out.shape[1]))
    assert {d for d, _ in seen} == {-1, 0, 1} and {w for _, w in seen} == {8, 9, 10}


def test_scheduled_sampling_feeds_the_models_own_words():
    torch.manual_seed(0)
    cfg = CaptionConfig(channels=4, embed=8, hidden=8, dropout=0.0, sampling=1.0)
    model = CaptionTask().build(cfg, 13).train()
    x, w = batch_strips([torch.rand(8, 24), torch.rand(8, 16)])
    tgt_in = torch.tensor([[BOS, 5, 6, 7], [BOS, 8, 9, 4]])
    got, _ = model(x, w, tgt_in)
    # hand loop: after BOS, every input word is the previous step's argmax (p = 1)
    state, tokens, want = model.start(x, w), tgt_in[:, 0], []
    for _ in range(4):
        z, state = model.step(tokens, state)
        want.append(z)
        tokens = z.argmax(-1)
    assert torch.allclose(got, torch.stack(want, 1), atol=1e-6)
    # p = 0 (and eval mode whatever p): the reference words are fed
    model.eval()
    state, ref = model.start(x, w), []
    for t in range(4):
        z, state = model.step(tgt_in[:, t], state)
        ref.append(z)
    assert torch.allclose(model(x, w, tgt_in)[0], torch.stack(ref, 1), atol=1e-6)
    assert not torch.allclose(got, torch.stack(ref, 1))
    with pytest.raises(ValueError, match=r"sampling: expected a probability in \[0, 1\], got 2"):
        CaptionTask().build(CaptionConfig(sampling=2.0), 13)


def test_memory_span_probe_equals_finite_differences():
    """The caption probe's ‖∂ℓ/∂s_t‖ (decoder top state s_t, ℓ the last token's loss) equals
    central finite differences of ℓ under a perturbation added to s_t (float64)."""
    from seqlab.data import Vocab
    from seqlab.tasks.caption import CaptionConfig, Captioner, _span_norms

    torch.manual_seed(0)
    words = ["seven", "two", "nine"]
    vocab = Vocab.build([words])
    model = Captioner(CaptionConfig(hidden=6, embed=5, channels=3), len(vocab)).double().eval()
    strip = torch.randn(8, 20, dtype=torch.float64)
    norms = _span_norms([(strip, words, None)], vocab)(model)
    tgt = torch.tensor([vocab.encode(words, bos=True, eos=True)])
    x, w = strip[None], torch.tensor([20])
    cell = model.decoder.cells[-1]

    def loss_with(t_hit, delta):
        state = model.start(x, w)
        for t in range(tgt.shape[1] - 1):
            if t == t_hit:  # s_t + delta, seen by the readout and by every later step
                original = cell.forward
                cell.forward = lambda inp, hx=None, f=original: _shift(f(inp, hx), delta)
            logits, state = model.step(tgt[:, t], state)
            if t == t_hit:
                del cell.forward
        return torch.nn.functional.cross_entropy(logits, tgt[:, -1]).item()

    H, eps = 12, 1e-6  # decoder width 2·hidden
    assert len(norms) == tgt.shape[1] - 1
    for t, got in enumerate(norms):
        fd = torch.tensor([
            (loss_with(t, _unit(H, j, eps)) - loss_with(t, _unit(H, j, -eps))) / (2 * eps)
            for j in range(H)
        ])  # fmt: skip
        assert got == pytest.approx(float(fd.norm()), rel=1e-6)


def _unit(H, j, eps):
    e = torch.zeros(1, H, dtype=torch.float64)
    e[0, j] = eps
    return e


def _shift(out, delta):
    return type(out)(out[0] + delta, *out[1:]) if isinstance(out, tuple) else out + delta
