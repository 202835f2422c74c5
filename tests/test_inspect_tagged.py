"""``seqlab inspect`` on tiny caption and errordetect runs through the CLI. Oracles: the
task's own ``seqlab predict`` (caption words, flagged words, P(error) per word) and the
model run without the probe (log p of the caption)."""

import html as html_lib
import json
import re

import pytest
import torch
import torch.nn.functional as F

import seqlab
import seqlab.runs
from seqlab.data import Vocab
from seqlab.tasks.caption import CaptionConfig, Captioner, CaptionTask, batch_strips
from test_inspect_cli import check_page, cli

CAPTION = ["--set", "hidden=8", "--set", "channels=4", "--set", "embed=8", "--set", "eval_every=2",
           "--set", "valid_strips=20", "--set", "test_strips=30", "--set", "strips_per_epoch=64",
           "--set", "batch_size=16", "--set", "beam=1", "--threads", 1, "-q"]  # fmt: skip
ERRORDETECT = ["--limit", 300, "--set", "hidden=8", "--set", "embed=8", "--set", "eval_every=2",
               "--set", "baseline_steps=3", "--threads", 1, "-q"]  # fmt: skip


def train(root, task, extra, steps=4):
    cli("train", task, *extra, "--max-steps", steps, "--runs-dir", root)
    (run,) = root.iterdir()
    return run


def test_caption_inspect_attention_and_traces(tmp_path):
    run = train(tmp_path / "runs", "caption", [*CAPTION, "--set", "conv_layers=2"])
    digits, words, _ = cli("predict", run, "5038").output.strip().split("\t")
    html = check_page(
        run,
        cli("inspect", run, "--text", "5038").output,
        ["inspect-attention", "inspect-saliency", "inspect-encoder-k0-gates",
         "inspect-encoder-k1-gates", "inspect-decoder-k0-gates",
         "inspect-decoder-grad-through-time"],
    )  # fmt: skip
    assert f"greedy caption &#x27;{words}&#x27;" in html or f"greedy caption '{words}'" in html
    # log p of that caption, recomputed without the probe
    lr = seqlab.load(run)
    vocab = Vocab.from_list(lr.meta["vocab"])
    strip, _ = CaptionTask.held_out_strip("5038", lr.config)
    x, w = batch_strips([strip])
    tgt = torch.tensor([vocab.encode(words.split(), bos=True, eos=True)])
    with torch.no_grad():
        logits, alpha = lr.model(x, w, tgt[:, :-1])
    logp = F.log_softmax(logits[0], -1).gather(1, tgt[0, 1:, None]).sum()
    assert f"log p = {float(logp):.3f}" in html
    assert torch.allclose(alpha.sum(-1), torch.ones(alpha.shape[:2]))
    assert alpha.shape[-1] == 32  # 4 digits × 8 columns


def test_caption_second_convolution_is_used():
    torch.manual_seed(0)
    model = Captioner(CaptionConfig(channels=4, embed=8, hidden=8, conv_layers=2), 13).eval()
    x, w = batch_strips([torch.rand(8, 16), torch.rand(8, 24)])
    # the encoder's input by hand: two 3×3 convolutions with ReLU, columns projected, tanh
    h = F.relu(F.conv2d(x.unsqueeze(1), model.conv.weight, model.conv.bias, padding=1))
    h = F.relu(F.conv2d(h, model.conv2.weight, model.conv2.bias, padding=1))
    cols = torch.tanh(model.column(h.permute(0, 3, 1, 2).reshape(2, 24, -1)))
    with torch.no_grad():
        want, _ = model.encoder(cols, w)
        got = model.start(x, w).memory
    assert torch.allclose(got, want, atol=1e-6)
    with pytest.raises(ValueError, match="conv_layers: expected 1 or 2, got 3"):
        Captioner(CaptionConfig(conv_layers=3), 13)


def test_errordetect_inspect_tagged_words(tmp_path):
    run = train(tmp_path / "runs", "errordetect", ERRORDETECT)
    text = "the the film are good , but its plot drags ."
    marked, probs = cli("predict", run, text).output.strip().split("\t")
    html = check_page(
        run,
        cli("inspect", run, "--text", text).output,
        ["inspect-p-error", "inspect-saliency", "inspect-encoder-k0-gates",
         "inspect-encoder-k1-gates", "inspect-encoder-grad-through-time"],
    )  # fmt: skip
    page = html_lib.unescape(html)
    assert marked in page  # the same words flagged as `seqlab predict` flags
    tagged = re.search(r">tagged words</h\d>(.*?)<h\d>saliency</h\d>", page, re.S).group(1)
    rows = re.findall(r"<tr><td>(\d+)</td><td>([^<]*)</td><td>([0-9.e-]+)</td>", tagged)
    assert [w for _, w, _ in rows] == text.split()
    want = [float(p) for p in probs.split()]
    assert [float(p) for _, _, p in rows] == pytest.approx(want, abs=0.005)


@pytest.mark.parametrize(
    "task,metric",
    [("translate", "test_bleu"), ("vowels", "test_acc"), ("caption", "test_exact"),
     ("errordetect", "test_f05")],
)  # fmt: skip
def test_runs_listing_shows_each_new_tasks_headline(tmp_path, task, metric):
    (tmp_path / "config.toml").write_text('model = "gru"\n')
    (tmp_path / "summary.json").write_text(json.dumps({"task": task, metric: 0.25, "steps": 7}))
    info = seqlab.runs.run_info(tmp_path)
    assert (info.metric, info.value, info.steps, info.model) == (metric, 0.25, 7, "gru")
