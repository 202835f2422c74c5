"""``seqlab inspect`` on tiny vowels and translate runs through the CLI. Oracles: the tasks' own
``seqlab predict`` (predicted speaker and its probability, greedy and beam translations), the
model run without the probe (logit, attention), finite differences in float64 (saliency), the
model's own pooling code (the pooled-vector decomposition) and the TSV itself (the default
translate example)."""

import copy
import html as html_lib
import json
import math
import re

import pytest
import torch
import torch.nn.functional as F

import seqlab
from seqlab.data import BOS, EOS, locate
from seqlab.inspection.vowels import contributions, pooling_weights
from seqlab.models import ClassifierConfig, SequenceClassifier
from test_inspect_cli import check_page, cli
from test_tasks_translate import toy_pairs, write_tsv

VOWELS = ["--set", "hidden=8", "--set", "layers=2", "--set", "eval_every=2", "--set",
          "baseline=false", "--threads", 1, "-q"]  # fmt: skip
TRANSLATE = ["--set", "hidden=16", "--set", "embed=8", "--set", "eval_every=3", "--threads", 1,
             "-q"]  # fmt: skip


def train(root, task, *extra, steps=4):
    cli("train", task, *extra, "--max-steps", steps, "--runs-dir", root)
    (run,) = root.iterdir()
    return run


def section(page: str, title: str) -> str:
    """The HTML of the section headed ``title`` up to the next heading of any level."""
    title = html_lib.escape(title)
    return re.search(rf">{re.escape(title)}</h\d>(.*?)(?:<h\d>|$)", page, re.S).group(1)


def rows(part: str, columns: int) -> list[list[str]]:
    """The first ``columns`` cells of each table row, unescaped."""
    cells = r"</td><td>".join(["([^<]*)"] * columns)
    found = re.findall(rf"<tr><td>{cells}</td>", part)
    return [[html_lib.unescape(c) for c in (r if columns > 1 else [r])] for r in found]


def finite_difference_norms(f, x: torch.Tensor, steps: list[int], eps: float = 1e-5):
    """‖∂f/∂x_t‖ for each t in ``steps`` by central differences, x (1, T, I) in float64."""
    out = []
    for t in steps:
        g = []
        for i in range(x.shape[-1]):
            d = torch.zeros_like(x)
            d[0, t, i] = eps
            g.append((f(x + d) - f(x - d)) / (2 * eps))
        out.append(float(torch.stack(g).detach().norm()))
    return out


def test_vowels_inspect_probabilities_saliency_and_pooling(tmp_path):
    run = train(tmp_path / "runs", "vowels", *VOWELS)
    (test_file,) = [p for p in locate("japanese_vowels") if p.stem.endswith("TEST")]
    line = cli("predict", run, test_file).output.splitlines()[5]
    _, speaker, prob, label = line.split("\t")
    html = check_page(
        run,
        cli("inspect", run, "--text", "5").output,
        ["inspect-input", "inspect-probabilities", "inspect-pooling", "inspect-saliency",
         "inspect-saliency-channels", "inspect-encoder-k0-gates", "inspect-encoder-k1-gates",
         "inspect-encoder-k3-gates", "inspect-encoder-grad-through-time"],
    )  # fmt: skip
    page = html_lib.unescape(html)
    assert "official test series 5 (" in page and f"speaker {label};" in page
    assert f"predicted speaker {speaker} with p = {prob}" in page  # as `seqlab predict` says
    probs = rows(section(html, "class probabilities"), 3)
    assert [r[0] for r in probs] == [str(c) for c in range(1, 10)]
    assert sum(float(r[1]) for r in probs) == pytest.approx(1.0, abs=5e-4)
    assert [r[0] for r in probs if "predicted" in r[2]] == [speaker]
    assert [r[0] for r in probs if "true" in r[2]] == [label]

    lr = seqlab.load(run)
    x = lr.encode("5")
    assert x.shape[-1] == 12 and x.shape[1] == len(
        rows(section(html, "pooling (max): how r forms"), 3)
    )
    k = lr.labels.index(speaker)
    # saliency ‖∂z_k/∂x_t‖: the page's top frames against central differences in float64
    model64 = copy.deepcopy(lr.model).double()
    lengths = torch.tensor([x.shape[1]])
    sal = rows(section(html, "saliency"), 3)
    assert len(sal) == 5
    want = finite_difference_norms(lambda v: model64(v, lengths)[0, k], x.double(),
                                   [int(r[0]) for r in sal])  # fmt: skip
    assert [float(r[2]) for r in sal] == pytest.approx(want, rel=2e-3)
    # the pooling table: Σ_t c_t + b_k is the logit the model computes; max pooling takes
    # each of the R pooled units from one frame
    pool = rows(section(html, "pooling (max): how r forms"), 3)
    with torch.no_grad():
        z = lr.model(x, lengths)[0, k]
    total = sum(float(r[2]) for r in pool) + float(lr.model.head.bias[k].detach())
    assert total == pytest.approx(float(z), abs=2e-3)
    R = lr.model.head.in_features
    shares = [float(r[1]) for r in pool]
    assert sum(shares) == pytest.approx(1.0, abs=1e-3)
    assert all(abs(s * R - round(s * R)) < 1e-2 for s in shares)
    # bidirectional: the share splits into the forward and the backward direction's units
    halves = rows(section(html, "pooling (max): how r forms"), 5)
    assert [float(r[3]) + float(r[4]) for r in halves] == pytest.approx(shares, abs=2e-4)
    # bad series
    r = cli("inspect", run, "--text", "999", ok=False)
    assert r.exit_code == 1 and "series number expected in 0-369, got 999" in r.output
    r = cli("inspect", run, "--text", "nope.ts:x", ok=False)
    assert "expected a test series number (0-369) or FILE.ts[:N], got 'nope.ts:x'" in r.output
    narrow = tmp_path / "narrow.ts"
    narrow.write_text("@data\n1,2:3,4:1\n")
    r = cli("inspect", run, "--text", f"{narrow}:0", ok=False)
    assert "expected 12 dimensions per frame" in r.output and "got 2" in r.output


@pytest.mark.parametrize("pooling", ["last", "mean", "max", "attention"])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_pooled_vector_decomposition_matches_the_models_pooling(pooling, bidirectional):
    torch.manual_seed(0)
    model = SequenceClassifier(ClassifierConfig(
        4, input_size=3, hidden_size=5, num_layers=2, bidirectional=bidirectional,
        pooling=pooling)).eval()  # fmt: skip
    x = torch.randn(1, 7, 3)
    o, a = pooling_weights(model, x)
    with torch.no_grad():
        r = model.encode(x, torch.tensor([7]))[0]  # the model's own pooling code
        z = model(x, torch.tensor([7]))[0]
    assert torch.allclose((a * o).sum(0), r, atol=1e-6)
    for k in range(4):
        c, share, b = contributions(model, x, k)
        assert float(c.sum()) + b == pytest.approx(float(z[k]), abs=1e-5)
        assert float(share.sum()) == pytest.approx(1.0)


def test_translate_inspect_attention_beams_and_saliency(tmp_path):
    data = write_tsv(tmp_path / "pairs.tsv", toy_pairs(80))
    run = train(tmp_path / "runs", "translate", "--data", data, *TRANSLATE)
    source, reference = "a big dog runs", "un chien grand court"
    greedy = cli("predict", run, source).output.strip().split("\t")[1]
    best = cli("predict", run, source, "--beam", 3).output.strip().split("\t")[1]
    html = check_page(
        run,
        cli("inspect", run, "--text", f"{source}\\t{reference}", "--beam", 3).output,
        ["inspect-attention", "inspect-saliency", "inspect-encoder-k0-gates",
         "inspect-encoder-k1-gates", "inspect-decoder-k0-gates",
         "inspect-decoder-grad-through-time"],
    )  # fmt: skip
    page = html_lib.unescape(html)
    assert f"source {source!r}: greedy translation {greedy!r}" in page
    assert f"reference {reference!r}: exact match {'yes' if greedy == reference else 'no'}" in page
    beams = rows(section(html, "beam search (beam size 3)"), 4)
    assert len(beams) == 3 and beams[0][1] == best  # `predict --beam 3` keeps the best beam

    # attention, teacher-forced on the reference, recomputed without the probe
    lr = seqlab.load(run)
    src = lr.encode(source)
    src_len = torch.tensor([src.shape[1]])
    ref_ids = lr.tgt_vocab.encode(reference.split())
    tgt_in = torch.tensor([[BOS, *ref_ids]])
    with torch.no_grad():
        logits, alpha = lr.model(src, src_len, tgt_in)
    assert torch.allclose(alpha.sum(-1), torch.ones(alpha.shape[:2]), atol=1e-6)
    att = rows(section(html, "attention"), 5)
    assert [r[1] for r in att] == ["<bos>", *reference.split()]
    assert [r[2] for r in att] == [*reference.split(), "<eos>"]
    peak = alpha[0].max(-1)
    assert [r[3] for r in att] == [source.split()[j] for j in peak.indices.tolist()]
    assert [float(r[4]) for r in att] == pytest.approx(peak.values.tolist(), rel=1e-3)

    # saliency ‖∂ log p(reference)/∂e_t‖ of the source embeddings, by central differences
    model64 = copy.deepcopy(lr.model).double()
    emb = model64.src_embed(src).detach()
    target = torch.tensor([*ref_ids, EOS])

    def logp(e):
        handle = model64.src_embed.register_forward_hook(lambda _m, _i, _o: e)
        try:
            out = model64(src, src_len, tgt_in)[0][0]
        finally:
            handle.remove()
        return -F.cross_entropy(out, target, reduction="sum")

    sal = rows(section(html, "saliency"), 3)
    assert sorted(r[1] for r in sal) == sorted(source.split())
    want = finite_difference_norms(logp, emb, [int(r[0]) for r in sal])
    assert [float(r[2]) for r in sal] == pytest.approx(want, rel=2e-3)

    # without --text: the first test item of the corpus, with its reference from the TSV
    check_page(run, cli("inspect", run, "--beam", 1).output, ["inspect-attention"])
    page = html_lib.unescape((run / "inspect.html").read_text())
    src_text, ref_text = re.search(r"source '([^']*)'.*?reference '([^']*)'", page, re.S).groups()
    assert (src_text, ref_text) in set(toy_pairs(80))

    # bad pairs, then no corpus left and no text: clear errors
    r = cli("inspect", run, "--text", f"{source}\\t", ok=False)
    assert r.exit_code == 1 and "expected a reference after the tab" in r.output
    r = cli("inspect", run, "--text", "\\tle chat", ok=False)
    assert "expected a source sentence before the tab" in r.output
    data.unlink()
    r = cli("inspect", run, ok=False)
    assert r.exit_code == 1 and "is not there to pick an example from" in r.output


def test_transformer_pages_for_vowels_and_translate(tmp_path):
    small = ["--model", "transformer", "--set", "hidden=8", "--set", "heads=2", "--set",
             "layers=1", "--set", "eval_every=2", "--threads", 1, "-q"]  # fmt: skip
    run = train(tmp_path / "v", "vowels", *small, "--set", "baseline=false", steps=2)
    html = check_page(run, cli("inspect", run, "--text", "3").output,
                      ["inspect-input", "inspect-probabilities",
                       "inspect-encoder.body.layers.0.self_attn-mean"])  # fmt: skip
    assert "official test series 3" in html
    data = write_tsv(tmp_path / "pairs.tsv", toy_pairs(40))
    run = train(tmp_path / "t", "translate", "--data", data, *small, steps=2)
    out = cli("inspect", run, "--text", "the red cat sleeps\\tle chat bleu dort").output
    layers = ["encoder.layers.0.self_attn", "decoder.layers.0.self_attn",
              "decoder.layers.0.multihead_attn"]  # fmt: skip
    html = check_page(run, out, [f"inspect-{n}-mean" for n in layers])
    assert "attention read on the reference &#x27;le chat bleu dort&#x27;" in html


def test_compare_translate_runs(tmp_path):
    """compare used to stop at translate's headline (test_bleu) and read vowels/caption runs
    as sunspots ones."""
    data = write_tsv(tmp_path / "pairs.tsv", toy_pairs(40))
    root = tmp_path / "runs"
    for model in ("lstm", "gru"):
        cli("train", "translate", "--data", data, "--model", model, *TRANSLATE,
            "--max-steps", 2, "--runs-dir", root)  # fmt: skip
    runs = sorted(root.iterdir())
    cli("compare", *runs, "--out", tmp_path / "cmp", "--text", "the red cat sleeps")
    html = (tmp_path / "cmp" / "compare.html").read_text()
    assert (tmp_path / "cmp" / "compare.png").is_file() and "baseline_copy_bleu" in html
    table = re.findall(r"<tr><td>(lstm|gru)</td><td>translate</td>(.*?)</tr>", html)
    assert sorted(m for m, _ in table) == ["gru", "lstm"]
    spans = [re.findall(r"<td>([^<]*)</td>", cells)[4] for _, cells in table]
    assert all(s.isdigit() for s in spans), spans  # a memory span measured for each run


def test_plot_probe_grads_measures_in_eval_mode_and_restores_the_mode(tmp_path):
    from seqlab.tasks.memspan import plot_probe_grads
    from seqlab.tasks.rundir import RunDir

    model = torch.nn.Linear(2, 2).train()
    seen = []

    def norms(m):
        seen.append(m.training)
        return [1.0, 0.5, 0.25]

    run = RunDir(tmp_path)
    plot_probe_grads(norms, model, run, "title")
    assert seen == [False] and model.training
    assert (tmp_path / "grad_through_time.png").read_bytes()[:4] == b"\x89PNG"
    (tmp_path / "grad_through_time.png").unlink()
    plot_probe_grads(None, model, run, "title")  # no probe (a Transformer): no plot
    assert not (tmp_path / "grad_through_time.png").exists()


def test_same_split_baselines_in_the_live_display(tmp_path):
    """Known answers: copying the source of an identity corpus scores validation BLEU 1; the
    class prior of JapaneseVowels' balanced validation split costs ln 9 nats."""
    same = [(s, s) for s, _ in toy_pairs(40)]
    data = write_tsv(tmp_path / "same.tsv", same)
    quiet = [a for a in TRANSLATE if a != "-q"]
    out = cli("train", "translate", "--data", data, *quiet, "--max-steps", 1,
              "--runs-dir", tmp_path / "t").output  # fmt: skip
    assert "same-split baseline copy source: 1\n" in out
    out = cli("train", "vowels", *[a for a in VOWELS if a != "-q"], "--max-steps", 1,
              "--runs-dir", tmp_path / "v").output  # fmt: skip
    assert f"same-split baseline class prior: {math.log(9):.4g}\n" in out
    (run,) = (tmp_path / "v").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["val_class_prior_loss"] == pytest.approx(math.log(9))
