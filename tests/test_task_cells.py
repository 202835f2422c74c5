"""Issue 13, item 4: every task and model takes any registered cell kind (``cell=``).

The new kinds (LayerNorm LSTM with a two-part state, LayerNorm GRU) go through the CLI, the
models' state plumbing (seq2seq bridges, decoder stacks, stream resets), the probe, the
forget-gate init and ``seqlab.backends()``; the kinds are read from the registry at run time,
so a kind registered later is accepted and listed too.
"""

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open

import seqlab
from seqlab.cli import main
from seqlab.functional import SPECS, LSTMState, register
from seqlab.functional.layernorm import LNLSTM, layer_norm
from seqlab.functional.spec import CellSpec, spec_for_choice
from seqlab.inspection import Probe
from seqlab.layers import make_layer
from seqlab.models import LanguageModel, LanguageModelConfig, Seq2Seq, Seq2SeqConfig
from seqlab.tasks import resolve_config
from seqlab.tasks.base import init_forget_bias
from seqlab.tasks.checks import BadSetting
from seqlab.tasks.shakespeare import ShakespeareConfig

CHARLM = ["--limit", 1, "--set", "hidden=12", "--set", "embed=8", "--set", "batch_size=4",
          "--set", "bptt=12", "--set", "eval_every=3", "--set", "eval_chars=300",
          "--set", "baseline_order=2", "--set", "sample_chars=10"]  # fmt: skip
FORECAST = ["--set", "hidden=8", "--set", "eval_every=3"]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def cli(*args, ok=True):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def train(root: Path, task: str, tiny: list, cell: str, steps: int = 3) -> Path:
    cli("train", task, *tiny, "--set", f"cell={cell}", "--max-steps", steps, "--threads", 1,
        "-q", "--runs-dir", root)  # fmt: skip
    (run,) = [p for p in root.iterdir() if (p / "summary.json").is_file()]
    return run


def weight_names(run: Path) -> set[str]:
    with safe_open(str(run / "model.safetensors"), "pt") as f:
        return set(f.keys())


def test_charlm_trains_an_lnlstm_through_cell_setting(tmp_path):
    run = train(tmp_path, "charlm", CHARLM, "lnlstm")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["model"] == "lnlstm" and summary["steps"] == 3
    assert 'cell = "lnlstm"' in (run / "config.toml").read_text()
    names = weight_names(run)  # the LayerNorm LSTM's own parameters were trained and saved
    assert any(n.endswith("ln_weight_c_l0") for n in names), names
    assert any(n.endswith("ln_weight_hh_l0") for n in names), names
    # the checkpoint rebuilds with the same cell: evaluate recomputes the held-out number
    out = json.loads(cli("evaluate", run, "--json").output)
    assert out["val_nats"] == pytest.approx(summary["val_nats"], rel=1e-5)


@pytest.mark.parametrize("cell", ["lngru", "mingru"])
def test_forecast_trains_new_kinds_through_cell_setting(tmp_path, cell):
    run = train(tmp_path, "forecast", FORECAST, cell)
    assert json.loads((run / "summary.json").read_text())["model"] == cell
    names = weight_names(run)  # exactly the kind's parameters, as its description names them
    spec = spec_for_choice(cell)
    for p in spec.params:
        assert any(n.endswith(f"{p.attr}_l0") for n in names), (p.attr, names)
    assert ("weight_hh_l0" in " ".join(names)) == any(p.attr == "weight_hh" for p in spec.params)


def test_unknown_cell_is_a_bad_setting_naming_the_choices(tmp_path):
    r = cli("train", "charlm", "--set", "cell=mamba", "--runs-dir", tmp_path, ok=False)
    assert r.exit_code == 2, r.output
    assert "setting 'cell'" in r.output and "'mamba'" in r.output
    for kind in ("lstm", "gru", "lnlstm", "lngru"):
        assert repr(kind) in r.output
    assert not any(tmp_path.iterdir())  # nothing half-made
    # --model takes the registered kinds too, and lists them when wrong
    r = cli("train", "charlm", "--model", "lstm,lnlstmx", "--runs-dir", tmp_path, ok=False)
    assert r.exit_code == 2 and "lnlstm" in r.output


def test_cell_overrides_model_and_model_accepts_new_kinds():
    cfg = resolve_config(ShakespeareConfig, overrides=["model=gru", "cell=lngru"])
    assert cfg.model == "lngru"
    assert resolve_config(ShakespeareConfig, overrides=["model=lnlstm"]).model == "lnlstm"
    assert resolve_config(ShakespeareConfig).model == "lstm"  # default unchanged


def _extra_spec(name: str) -> CellSpec:
    return CellSpec(name, gates=("h",), state=("h",), step=SPECS["rnn_tanh"].step,
                    trace=("a", "h"), choice=name, options={})  # fmt: skip


def test_kinds_registered_later_are_valid_cells_and_listed_by_backends():
    name = "test_late_rnn"
    register(_extra_spec(name))
    try:
        assert resolve_config(ShakespeareConfig, overrides=[f"cell={name}"]).model == name
        kinds = seqlab.backends()["kinds"]
        assert kinds[name] == {"runs_on": "reference", "kernels": [], "choice": name}
    finally:
        del SPECS[name]
    with pytest.raises(BadSetting, match=name):
        resolve_config(ShakespeareConfig, overrides=[f"cell={name}"])


def test_backends_lists_every_kind_with_what_runs_it():
    report = seqlab.backends()
    kinds = report["kinds"]
    assert set(kinds) == set(SPECS) and {"lnlstm", "lngru"} <= set(kinds)
    for name, row in kinds.items():
        assert row["runs_on"] in ("native", "fused", "torch", "reference") + tuple(
            k for r in kinds.values() for k in r["kernels"]
        ), (name, row)
        # a kind runs on the reference loop exactly when no kernel covers it
        assert (row["runs_on"] == "reference") == (not row["kernels"] or
                                                   report["default"] == "reference")  # fmt: skip
    assert kinds["lstm"]["runs_on"] == report["default"]
    assert seqlab.engine.kind_backends("reference")["lstm"]["runs_on"] == "reference"


def _merge(s, D, B):  # (L·D, B, H) -> (L, B, D·H), as the bridge documents
    return s.reshape(-1, D, B, s.shape[-1]).permute(0, 2, 1, 3).reshape(-1, B, D * s.shape[-1])


@pytest.mark.parametrize("bridge", ["identity", "linear"])
def test_seq2seq_bridge_carries_the_lnlstm_cell_state(bridge):
    torch.manual_seed(0)
    cfg = Seq2SeqConfig(src_vocab=9, tgt_vocab=9, embed_size=4, hidden_size=3,
                        encoder_cell="lnlstm", decoder_cell="lnlstm", bridge=bridge,
                        bidirectional=True, attention="none")  # fmt: skip
    model = Seq2Seq(cfg).eval()
    src = torch.randint(3, 9, (2, 5))
    lengths = torch.tensor([5, 3])
    with torch.no_grad():
        state = model.start(src, lengths).rnn
        # oracle: the encoder's own final state, bridged by hand
        _, final = model.encoder(model.src_embed(src), lengths)
        h, c = _merge(final.h, 2, 2), _merge(final.c, 2, 2)
        if bridge == "linear":
            h = torch.tanh(model.bridge_h(h[-1]))[None]
            c = model.bridge_c(c[-1])[None]
    assert isinstance(state, LSTMState)
    torch.testing.assert_close(state.h, h)
    torch.testing.assert_close(state.c, c)
    assert state.c.abs().sum() > 0


def test_seq2seq_lnlstm_encoder_into_lngru_decoder():
    cfg = Seq2SeqConfig(src_vocab=9, tgt_vocab=9, embed_size=4, hidden_size=3,
                        encoder_cell="lnlstm", decoder_cell="lngru", bridge="linear")  # fmt: skip
    model = Seq2Seq(cfg)
    assert not hasattr(model, "bridge_c")  # the decoder has no cell state to fill
    state = model.start(torch.randint(3, 9, (2, 4))).rnn
    assert isinstance(state, torch.Tensor) and state.shape == (1, 2, 3)


def test_language_model_stream_reset_zeroes_every_state_part():
    torch.manual_seed(0)
    lm = LanguageModel(LanguageModelConfig(vocab_size=7, embed_size=4, hidden_size=5,
                                           cell="lnlstm"))  # fmt: skip
    x = torch.randint(0, 7, (2, 4))
    _, state = lm(x)
    resets = torch.zeros(2, 3, dtype=torch.bool)
    resets[1, 0] = True  # row 1 starts a new document at the first step of the next chunk
    y = torch.randint(0, 7, (2, 3))
    with torch.no_grad():
        logits, _ = lm(y, state, resets=resets)
        fresh, _ = lm(y[1:])  # oracle: row 1 from a zero state
        carried, _ = lm(y[:1], LSTMState(state.h[:, :1], state.c[:, :1]))
    torch.testing.assert_close(logits[1:], fresh)
    torch.testing.assert_close(logits[:1], carried)


def test_forget_bias_init_reaches_layernorm_lstm_layers():
    layer = make_layer("lnlstm", 3, 4)
    init_forget_bias(layer, 1.0)
    f = LNLSTM.gate_slice("f", 4)
    assert torch.all(layer.bias_ih_l0[f] == 1.0) and torch.all(layer.bias_hh_l0[f] == 0.0)
    others = torch.cat([layer.bias_ih_l0[:4], layer.bias_ih_l0[8:]])
    assert not torch.all(others == 1.0)  # only the forget slice


def test_probe_runs_a_layernorm_lstm_as_the_layer_does():
    torch.manual_seed(0)
    layer = make_layer("lnlstm", 3, 4, batch_first=True, bidirectional=True).double()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    lengths = torch.tensor([5, 2])
    want, want_final = layer(x, lengths=lengths)
    with Probe(layer) as probe:
        got, got_final = layer(x, lengths=lengths)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got_final.c, want_final.c)
    # hand check of one step: h_1 = o ⊙ tanh(LN(c_1)) from the probe's own gate trace
    tr = probe.traces()["layer"][0]
    c1 = tr["i"][:, 0] * tr["g"][:, 0]
    h1 = tr["o"][:, 0] * torch.tanh(layer_norm(c1, layer.ln_weight_c_l0, layer.ln_bias_c_l0))
    torch.testing.assert_close(tr["h"][:, 0], h1)


def test_bench_times_a_new_kind():
    out = cli("bench", "--models", "lnlstm", "--hidden", 8, "--batch", 2, "--seq", 4,
              "--repeats", 1, "--threads", 1, "--impl", "seqlab").output  # fmt: skip
    assert "lnlstm" in out
    bad = cli("bench", "--models", "lnlstmx", ok=False)
    assert bad.exit_code == 2 and "lnlstm" in bad.output


def test_onnx_export_refuses_a_kind_without_an_onnx_operator(tmp_path):
    from seqlab.export import to_onnx

    lm = LanguageModel(LanguageModelConfig(vocab_size=7, embed_size=4, hidden_size=5,
                                           cell="lnlstm"))  # fmt: skip
    with pytest.raises(ValueError, match="no ONNX export for cell kind 'lnlstm'"):
        to_onnx(lm, torch.randint(0, 7, (1, 4)), tmp_path / "lm.onnx")
    assert not list(tmp_path.iterdir())  # nothing half-written
