"""ONNX export checked with onnxruntime: each exported file is run on fresh random inputs
(other batch sizes, lengths and steps than the export's example) and compared with the
model, and with torch.nn where torch.nn has the same layer."""

import json

import numpy as np
import pytest
import torch

import seqlab
from seqlab.models import (
    ClassifierConfig,
    LanguageModel,
    LanguageModelConfig,
    Seq2Seq,
    Seq2SeqConfig,
    SequenceClassifier,
)

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from seqlab.export import ExportMismatchError, seq2seq_paths, session, to_onnx  # noqa: E402

MODES = {
    "rnn_tanh": lambda **k: seqlab.RNN(nonlinearity="tanh", **k),
    "rnn_relu": lambda **k: seqlab.RNN(nonlinearity="relu", **k),
    "lstm": lambda **k: seqlab.LSTM(**k),
    "gru": lambda **k: seqlab.GRU(**k),
    "gru_reset_before": lambda **k: seqlab.GRU(reset_after=False, **k),
}


def run_file(path, **feeds):
    sess = session(path)
    names = [o.name for o in sess.get_outputs()]
    got = sess.run(None, {k: v.numpy() for k, v in feeds.items()})
    return dict(zip(names, (torch.from_numpy(np.asarray(g)) for g in got), strict=True))


def named(sess, feeds):
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, feeds), strict=True))


def close(got, want, what=""):
    torch.testing.assert_close(got, want.detach(), rtol=1e-4, atol=2e-5, msg=what)


def parts(state):
    return (state,) if isinstance(state, torch.Tensor) else tuple(state)


# ---------------------------------------------------------------- layers
@pytest.mark.parametrize("loop", [False, True], ids=["native-op", "scan"])
@pytest.mark.parametrize("mode", list(MODES))
def test_layer_two_layers_bidirectional_lengths_state(tmp_path, mode, loop):
    layer = MODES[mode](input_size=3, hidden_size=5, num_layers=2, bidirectional=True).eval()
    n = 2 if mode == "lstm" else 1
    ex_state = tuple(torch.randn(4, 2, 5) for _ in range(n))
    ex = (torch.randn(6, 2, 3), ex_state if n == 2 else ex_state[0], torch.tensor([6, 2]))
    (path,) = to_onnx(layer, ex, tmp_path / "l.onnx", loop=loop)
    x, lengths = torch.randn(9, 5, 3), torch.tensor([9, 1, 4, 7, 2])  # other B, T
    state = tuple(torch.randn(4, 5, 5) for _ in range(n))
    got = run_file(path, x=x, lengths=lengths, **dict(zip(("h0", "c0"), state, strict=False)))
    with torch.no_grad():
        y, final = layer(x, state if n == 2 else state[0], lengths=lengths)
    close(got["y"], y, "y")
    assert torch.all(got["y"][4:, 2] == 0)  # padded steps are exact zeros
    for name, want in zip(("h_n", "c_n"), parts(final), strict=False):
        close(got[name], want, name)
    if mode.startswith("gru_reset") or mode == "rnn_relu":
        return
    # independent oracle: torch.nn with the same weights, lengths through packing
    ref = getattr(torch.nn, {"rnn_tanh": "RNN", "lstm": "LSTM", "gru": "GRU"}[mode])(
        3, 5, num_layers=2, bidirectional=True
    )
    ref.load_state_dict(layer.state_dict())
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
    with torch.no_grad():
        out, fin = ref(packed, state if n == 2 else state[0])
    out = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=9)[0]
    close(got["y"], out, "y vs torch.nn")
    close(got["h_n"], parts(fin)[0], "h_n vs torch.nn")


@pytest.mark.parametrize("loop", [False, True], ids=["native-op", "scan"])
@pytest.mark.parametrize("mode", list(MODES))
def test_layer_batch_first_zero_state_no_lengths(tmp_path, mode, loop):
    layer = MODES[mode](input_size=4, hidden_size=6, batch_first=True).eval()
    (path,) = to_onnx(layer, torch.randn(2, 5, 4), tmp_path / "l.onnx", loop=loop)
    x = torch.randn(3, 11, 4)
    got = run_file(path, x=x)
    with torch.no_grad():
        y, final = layer(x)
    close(got["y"], y)
    close(got["h_n"], parts(final)[0])


def test_onnx_operators_are_used_unless_loop(tmp_path):
    import onnx

    gru = seqlab.GRU(3, 4, reset_after=False).eval()
    (a,) = to_onnx(gru, torch.randn(5, 2, 3), tmp_path / "a.onnx")
    (b,) = to_onnx(gru, torch.randn(5, 2, 3), tmp_path / "b.onnx", loop=True)
    ops_a = {n.op_type for n in onnx.load(a).graph.node}
    ops_b = {n.op_type for n in onnx.load(b).graph.node}
    assert "GRU" in ops_a and "Scan" not in ops_a
    (node,) = [n for n in onnx.load(a).graph.node if n.op_type == "GRU"]
    assert {x.name: x.i for x in node.attribute}["linear_before_reset"] == 0
    assert "Scan" in ops_b and "GRU" not in ops_b


def test_torch_nn_layer_exports_too(tmp_path):
    ref = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True).eval()
    (path,) = to_onnx(ref, (torch.randn(2, 5, 3), None, torch.tensor([5, 3])), tmp_path / "t.onnx")
    x, lengths = torch.randn(3, 6, 3), torch.tensor([2, 6, 4])
    got = run_file(path, x=x, lengths=lengths)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, True, enforce_sorted=False)
    with torch.no_grad():
        out, (h, c) = ref(packed)
    close(got["y"], torch.nn.utils.rnn.pad_packed_sequence(out, True, total_length=6)[0])
    close(got["h_n"], h)
    close(got["c_n"], c)


def test_learned_initial_state(tmp_path):
    layer = seqlab.LSTM(3, 4, learn_initial_state=True).eval()
    with torch.no_grad():
        layer.initial_state_param.normal_()
    (path,) = to_onnx(layer, torch.randn(5, 2, 3), tmp_path / "l.onnx")
    x = torch.randn(4, 3, 3)
    with torch.no_grad():
        y, _ = layer(x)
    close(run_file(path, x=x)["y"], y)


# ---------------------------------------------------------------- models
@pytest.mark.parametrize(
    "cell,pooling,bidirectional,ngrams",
    [
        ("lstm", "last", True, 0),
        ("gru", "mean", False, 0),
        ("rnn", "max", True, 0),
        ("lstm", "attention", True, 5),
    ],
)
def test_classifier(tmp_path, cell, pooling, bidirectional, ngrams):
    cfg = ClassifierConfig(
        num_classes=3, vocab_size=20, embed_size=6, hidden_size=5, num_layers=2, cell=cell,
        bidirectional=bidirectional, pooling=pooling, ngram_buckets=ngrams,
    )  # fmt: skip
    model = SequenceClassifier(cfg).eval()
    if model.ngrams is not None:
        torch.nn.init.normal_(model.ngrams.weight)
    ids = torch.randint(0, 20, (2, 6))
    (path,) = to_onnx(model, (ids, torch.tensor([6, 3])), tmp_path / "c.onnx")
    ids, lengths = torch.randint(0, 20, (4, 8)), torch.tensor([8, 1, 5, 3])
    with torch.no_grad():
        close(run_file(path, inputs=ids, lengths=lengths)["logits"], model(ids, lengths))


def test_dense_regressor(tmp_path):
    model = seqlab.models.SequenceRegressor(2, 3, hidden_size=4, cell="gru").eval()
    (path,) = to_onnx(model, torch.randn(2, 5, 2), tmp_path / "r.onnx", loop=True)
    x = torch.randn(3, 7, 2)
    with torch.no_grad():
        close(run_file(path, inputs=x, lengths=torch.tensor([7, 7, 7]))["logits"], model(x))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_language_model_forward_and_greedy_generation(tmp_path, cell):
    model = LanguageModel(LanguageModelConfig(17, 6, 8, num_layers=2, cell=cell)).eval()
    (path,) = to_onnx(model, torch.randint(0, 17, (2, 5)), tmp_path / "lm.onnx")
    sess = session(path)
    tokens = torch.randint(0, 17, (3, 7))
    start = parts(model.start(3))
    names = ("h0", "c0")[: len(start)]
    got = sess.run(
        None,
        {"tokens": tokens.numpy(), **{n: s.numpy() for n, s in zip(names, start, strict=True)}},
    )
    with torch.no_grad():
        logits, final = model(tokens)
    close(torch.from_numpy(got[0]), logits)
    for g, w in zip(got[1:], parts(final), strict=True):
        close(torch.from_numpy(g), w)
    # greedy continuation with onnxruntime alone, one step at a time
    prompt = torch.randint(0, 17, (2, 4))
    want = model.generate(prompt, 12).tokens
    feeds = {
        "tokens": prompt[:, :-1].numpy(),
        **{n: s.numpy() for n, s in zip(names, parts(model.start(2)), strict=True)},
    }
    out = sess.run(None, feeds)
    tok, mine = prompt[:, -1:].numpy(), []
    for _ in range(12):
        out = sess.run(None, {"tokens": tok, **dict(zip(names, out[1:], strict=True))})
        tok = out[0][:, -1].argmax(-1)[:, None]
        mine.append(tok[:, 0])
    assert torch.equal(torch.from_numpy(np.stack(mine, 1)), want)


S2S = {
    "additive-gru": dict(attention="additive"),
    "dot-lstm-2layers": dict(attention="dot", encoder_cell="lstm", decoder_cell="lstm",
                             encoder_layers=2, decoder_layers=2),
    "general-bidir-linear-bridge": dict(attention="general", bidirectional=True,
                                        decoder_hidden_size=7, reverse_source=True),
    "none-rnn": dict(attention="none", encoder_cell="rnn", decoder_cell="rnn"),
    "g2p-like": dict(attention="general", encoder_cell="lstm", decoder_cell="lstm",
                     bidirectional=True, bridge="identity", input_feeding=False),
    "lstm-to-lstm-linear": dict(attention="none", encoder_cell="lstm", decoder_cell="lstm",
                                bridge="linear", input_feeding=False),
}  # fmt: skip


@pytest.mark.parametrize("kind", list(S2S))
def test_seq2seq_encoder_and_decoder_step(tmp_path, kind):
    model = Seq2Seq(Seq2SeqConfig(15, 13, embed_size=6, hidden_size=5, **S2S[kind])).eval()
    src = torch.randint(4, 15, (2, 6))
    paths = to_onnx(model, (src, torch.tensor([6, 3])), tmp_path / "s.onnx")
    assert paths == list(seq2seq_paths(tmp_path / "s.onnx"))
    enc, dec = session(paths[0]), session(paths[1])
    src, lengths = torch.randint(4, 15, (3, 8)), torch.tensor([8, 2, 5])
    state = named(enc, {"src": src.numpy(), "src_lengths": lengths.numpy()})
    lstm = "c0" in state
    tok = np.full(3, model.config.bos_id)
    rnn = {"h": state["h0"], **({"c": state["c0"]} if lstm else {})}
    fixed = {k: state[k] for k in ("memory", "keys", "mask")}
    feed, mine = state["feed"], []
    for _ in range(10):
        out = named(dec, {"token": tok, **rnn, **fixed, "feed": feed})
        tok = out["logits"].argmax(-1)
        rnn = {"h": out["h_out"], **({"c": out["c_out"]} if lstm else {})}
        feed = out["feed_out"]
        mine.append(tok)
    ref_state = model.start(src, lengths)
    close(torch.from_numpy(state["memory"]), ref_state.memory)
    # the reference greedy loop, step by step on the model itself (no EOS stop)
    t = torch.full((3,), model.config.bos_id)
    s, ref = ref_state, []
    with torch.no_grad():
        for _ in range(10):
            logits, s = model.step(t, s)
            t = logits.argmax(-1)
            ref.append(t)
    assert torch.equal(torch.from_numpy(np.stack(mine, 1)), torch.stack(ref, 1))


def test_transformer_and_unknown_models_are_refused(tmp_path):
    cfg = ClassifierConfig(
        num_classes=2, vocab_size=9, embed_size=8, hidden_size=8, cell="transformer", nhead=2
    )
    with pytest.raises(ValueError, match="transformer"):
        to_onnx(SequenceClassifier(cfg), torch.randint(0, 9, (2, 3)), tmp_path / "x.onnx")
    with pytest.raises(TypeError, match="model: expected"):
        to_onnx(torch.nn.Linear(2, 2), torch.randn(1, 2), tmp_path / "y.onnx")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_mismatch_is_reported_and_nothing_written(tmp_path, monkeypatch):
    import seqlab.export as ex

    real = ex._plan_lm

    def perturbed(model, args, loop):
        job = real(model, args, loop)
        job[3]["logits"] = job[3]["logits"] + 1e-2  # the reference no longer matches
        return job

    monkeypatch.setattr(ex, "_plan_lm", perturbed)
    model = LanguageModel(LanguageModelConfig(11, 4, 5)).eval()
    with pytest.raises(ExportMismatchError, match="logits"):
        to_onnx(model, torch.randint(0, 11, (2, 3)), tmp_path / "lm.onnx")
    assert not (tmp_path / "lm.onnx").exists()


def test_metadata_travels_with_the_file(tmp_path):
    model = LanguageModel(LanguageModelConfig(5, 4, 4, cell="gru")).eval()
    (path,) = to_onnx(
        model, torch.randint(0, 5, (1, 2)), tmp_path / "m.onnx", metadata={"vocab": list("abcde")}
    )
    props = session(path).get_modelmeta().custom_metadata_map
    assert json.loads(props["vocab"]) == list("abcde")


# ---------------------------------------------------------------- the command line
def _train(root, task, data_file):
    from click.testing import CliRunner

    from seqlab.cli import main

    args = ["train", task, "--data", str(data_file), "--limit", "0", "--max-steps", "2",
            "--threads", "1", "-q", "--runs-dir", str(root), "--set", "eval_every=2"]  # fmt: skip
    tiny = {
        "shakespeare": ["hidden=16", "embed=8", "batch_size=4", "bptt=16", "eval_chars=400",
                        "baseline_order=2", "sample_chars=20"],
        "sentiment": ["hidden=8", "embed=8"],
        "g2p": ["hidden=16", "embed=8", "eval_words=20"],
        "sunspots": ["hidden=8"],
    }  # fmt: skip
    for item in tiny[task]:
        args += ["--set", item]
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    (run,) = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return run


def _export(run, out, ok=True):
    from click.testing import CliRunner

    from seqlab.cli import main

    res = CliRunner().invoke(main, ["export", str(run), "--onnx", str(out)])
    assert (res.exit_code == 0) == ok, res.output
    return res


def test_cli_exports_each_task_and_the_files_run(tmp_path):
    from seqlab.examples.onnx_generate import generate
    from seqlab.tasks import RunDir, get_task

    text = tmp_path / "poem.txt"
    text.write_text("the cat sat on the mat. " * 60)
    run = _train(tmp_path / "a", "shakespeare", text)
    _export(run, tmp_path / "lm.onnx")
    model, vocab, _ = get_task("shakespeare").load(RunDir(run))
    prompt = "the c"
    want = model.generate(torch.tensor([vocab.encode(prompt)]), 15).tokens[0]
    got = generate(str(tmp_path / "lm.onnx"), prompt, 15, temperature=0)
    assert got == prompt + "".join(vocab.decode(want, strip_specials=False))
    assert generate(str(tmp_path / "lm.onnx"), prompt, 15, temperature=1e-4) == got  # sampling
    # the example runs as a lone file, without torch or seqlab
    import subprocess
    import sys

    import seqlab.examples.onnx_generate as example

    code = ("import runpy, sys; f = sys.argv[1]; sys.argv = ['g', sys.argv[2], '--prompt', "
            "'the c', '--length', '15', '--temperature', '0']; "
            "runpy.run_path(f, run_name='__main__'); "
            "assert 'torch' not in sys.modules and 'seqlab' not in sys.modules")  # fmt: skip
    argv = [sys.executable, "-c", code, example.__file__, str(tmp_path / "lm.onnx")]
    res = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, env={})
    assert res.returncode == 0, res.stderr
    assert res.stdout == got + "\n"

    csv = tmp_path / "reviews.csv"
    csv.write_text(
        "text,label\n" + "".join(f'"good fun {i}",pos\n"bad, boring {i}",neg\n' for i in range(30))
    )
    run = _train(tmp_path / "b", "sentiment", csv)
    _export(run, tmp_path / "cls.onnx")
    model, vocab, labels, _ = get_task("sentiment").load(RunDir(run))
    props = session(tmp_path / "cls.onnx").get_modelmeta().custom_metadata_map
    assert json.loads(props["labels"]) == labels
    ids, lengths = torch.randint(0, len(vocab), (3, 6)), torch.tensor([6, 2, 4])
    with torch.no_grad():
        close(run_file(tmp_path / "cls.onnx", inputs=ids, lengths=lengths)["logits"],
              model(ids, lengths))  # fmt: skip

    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("".join(f"ab{c}\tA B {c.upper()}\n" for c in "cdefghijklmnopqrstuvwxyz"))
    run = _train(tmp_path / "c", "g2p", tsv)
    _export(run, tmp_path / "g2p.onnx")
    assert all(p.is_file() for p in seq2seq_paths(tmp_path / "g2p.onnx"))

    series = tmp_path / "temps.csv"
    series.write_text("day,temp\n" + "".join(f"{i},{10 + (i % 7)}\n" for i in range(120)))
    run = _train(tmp_path / "d", "sunspots", series)
    _export(run, tmp_path / "sun.onnx")
    model, _, cfg = get_task("sunspots").load(RunDir(run))
    x = torch.randn(4, cfg.window)
    with torch.no_grad():
        close(run_file(tmp_path / "sun.onnx", x=x)["y"], model(x))


def test_cli_refuses_a_transformer_run_clearly(tmp_path):
    series = tmp_path / "temps.csv"
    series.write_text("day,temp\n" + "".join(f"{i},{10 + (i % 7)}\n" for i in range(120)))
    from click.testing import CliRunner

    from seqlab.cli import main

    args = ["train", "sunspots", "--data", str(series), "--model", "transformer", "-q",
            "--max-steps", "1", "--runs-dir", str(tmp_path / "r"), "--set", "hidden=8",
            "--set", "heads=2"]  # fmt: skip
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    (run,) = (tmp_path / "r").iterdir()
    res = _export(run, tmp_path / "t.onnx", ok=False)
    assert "transformer" in res.output and not (tmp_path / "t.onnx").exists()


# ---------------------------------------------------------------- any cell: Scan loops
class LayerNormTanhCell(torch.nn.Module):
    """A cell seqlab does not ship: h' = tanh(LN(x W + h U)) with a learned h_0 (a new cell
    for the traced Scan path; its own Python forward is the oracle)."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.hidden_size = hidden_size
        self.w = torch.nn.Linear(input_size, hidden_size)
        self.u = torch.nn.Linear(hidden_size, hidden_size, bias=False)
        self.norm = torch.nn.LayerNorm(hidden_size)
        self.h0 = torch.nn.Parameter(torch.randn(hidden_size))

    def initial_state(self, batch_size, dtype=None, device=None):
        return self.h0.detach().to(dtype).expand(batch_size, -1).clone()

    def forward(self, x, h):
        h = torch.tanh(self.norm(self.w(x) + self.u(h)))
        return 2 * h, h  # the output differs from the state


@pytest.mark.parametrize("cell", ["custom", "lstm", "gru_reset_before"])
def test_recurrent_any_cell_with_lengths_reverse_bidirectional_stacked(tmp_path, cell):
    def make(i):
        if cell == "custom":
            return LayerNormTanhCell(i, 5)
        if cell == "lstm":
            return seqlab.LSTMCell(i, 5)
        return seqlab.GRUCell(i, 5, reset_after=False)

    bi = seqlab.Bidirectional(seqlab.Recurrent(make(3)), seqlab.Recurrent(make(3)), merge="concat")
    model = seqlab.Stacked([bi, seqlab.Recurrent(make(10), reverse=True)]).eval()
    ex = (torch.randn(5, 2, 3), None, torch.tensor([5, 2]))
    (path,) = to_onnx(model, ex, tmp_path / "w.onnx")
    x, lengths = torch.randn(8, 4, 3), torch.tensor([8, 1, 3, 6])
    got = run_file(path, x=x, lengths=lengths)
    with torch.no_grad():
        y, final = model(x, None, lengths)
    close(got["y"], y)
    assert torch.all(got["y"][1:, 1] == 0)
    from seqlab.functional.scan import tree_leaves

    for k, leaf in enumerate(tree_leaves(final)):
        close(got[f"state_{k}"], leaf, f"state_{k}")


def test_recurrent_merge_sum_batch_first(tmp_path):
    fwd = seqlab.Recurrent(LayerNormTanhCell(3, 4), batch_first=True)
    bwd = seqlab.Recurrent(LayerNormTanhCell(3, 4), batch_first=True)
    model = seqlab.Bidirectional(fwd, bwd, merge="sum").eval()
    (path,) = to_onnx(model, torch.randn(2, 5, 3), tmp_path / "m.onnx")
    x = torch.randn(3, 7, 3)
    with torch.no_grad():
        close(run_file(path, x=x)["y"], model(x)[0])


class ClampedLSTMCell(seqlab.LSTMCell):
    """A built-in cell subclass overriding forward (torch.nn's return): h' clamped."""

    def forward(self, x, hx=None):
        h, c = super().forward(x, hx)
        return h.clamp(-0.1, 0.1), c


def test_builtin_cell_subclass_exports_its_own_forward(tmp_path):
    """An overridden forward is what Recurrent runs, so it is what the export traces (not
    the written-out LSTM step); checked against the module itself."""
    torch.manual_seed(0)
    model = seqlab.Recurrent(ClampedLSTMCell(3, 5)).eval()
    (path,) = to_onnx(model, torch.randn(4, 2, 3), tmp_path / "c.onnx")
    x = torch.randn(6, 3, 3) * 3
    with torch.no_grad():
        y, final = model(x)
    assert y.abs().max() <= 0.1 + 1e-7 and (y.abs() == 0.1).any()  # the clamp really acts
    got = run_file(path, x=x)
    close(got["y"], y)
    close(got["state_0"], final.h)
    close(got["state_1"], final.c)


def test_models_built_on_torch_nn_layers_export(tmp_path):
    """impl="torch" models hold torch.nn layers (same parameters): they export the same way."""
    model = LanguageModel(LanguageModelConfig(13, 6, 7, num_layers=2, cell="gru", impl="torch"))
    model.eval()
    (path,) = to_onnx(model, torch.randint(0, 13, (2, 4)), tmp_path / "lm.onnx")
    tokens, h0 = torch.randint(0, 13, (3, 9)), torch.randn(2, 3, 7)
    with torch.no_grad():
        logits, h_n = model(tokens, h0)
    got = run_file(path, tokens=tokens, h0=h0)
    close(got["logits"], logits)
    close(got["h_n"], h_n)
