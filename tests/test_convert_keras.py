"""Keras 3 ⇄ seqlab conversion: outputs equal Keras's own forward pass (the oracle), both ways.

Skipped without Keras (an optional extra). Run with the torch backend:
``KERAS_BACKEND=torch python -m pytest tests/test_convert_keras.py`` in a venv with
``pip install '.[keras]'``.
"""

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")

import seqlab  # noqa: E402
from seqlab.convert import from_keras, to_keras  # noqa: E402

KINDS = {
    "simple_rnn_tanh": lambda **k: keras.layers.SimpleRNN(activation="tanh", **k),
    "simple_rnn_relu": lambda **k: keras.layers.SimpleRNN(activation="relu", **k),
    "lstm": lambda **k: keras.layers.LSTM(**k),
    "gru_reset_after": lambda **k: keras.layers.GRU(reset_after=True, **k),
    "gru_reset_before": lambda **k: keras.layers.GRU(reset_after=False, **k),
}


def randomize(layer, scale=0.5):
    """Random values in every weight, biases included (Keras starts them at 0)."""
    rng = np.random.default_rng(0)
    layer.set_weights(
        [rng.normal(0, scale, w.shape).astype("float32") for w in layer.get_weights()]
    )


def keras_out(layer, x):
    y = layer(x.numpy())
    return torch.as_tensor(keras.ops.convert_to_numpy(y))


def close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.fixture
def x():
    return torch.randn(3, 7, 4)


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("kind", list(KINDS))
def test_layer_from_keras_and_back(kind, use_bias, x):
    k = KINDS[kind](units=5, return_sequences=True, use_bias=use_bias)
    k(x.numpy())
    randomize(k)
    want = keras_out(k, x)
    s = from_keras(k)
    assert s.batch_first and s.bias == use_bias
    with torch.no_grad():
        y, _ = s(x)
    close(y, want)
    back = to_keras(s)
    close(keras_out(back, x), want)


@pytest.mark.parametrize("kind", ["simple_rnn_tanh", "lstm", "gru_reset_after", "gru_reset_before"])
def test_seqlab_to_keras_with_both_biases(kind, x):
    """seqlab carries b_ih and b_hh; Keras one bias (or two for reset-after GRU)."""
    make = {
        "simple_rnn_tanh": lambda: seqlab.RNN(4, 5, batch_first=True),
        "lstm": lambda: seqlab.LSTM(4, 5, batch_first=True),
        "gru_reset_after": lambda: seqlab.GRU(4, 5, batch_first=True),
        "gru_reset_before": lambda: seqlab.GRU(4, 5, batch_first=True, reset_after=False),
    }[kind]
    s = make()
    with torch.no_grad():
        for p in s.parameters():
            p.normal_(0, 0.5)
        y, _ = s(x)
    close(keras_out(to_keras(s), x), y)


@pytest.mark.parametrize("kind", ["lstm", "gru_reset_after", "gru_reset_before"])
def test_bidirectional(kind, x):
    k = keras.layers.Bidirectional(KINDS[kind](units=5, return_sequences=True))
    k(x.numpy())
    randomize(k)
    want = keras_out(k, x)
    s = from_keras(k)
    assert s.bidirectional
    with torch.no_grad():
        y, _ = s(x)
    close(y, want)
    close(keras_out(to_keras(s), x), want)


def test_last_output_of_return_sequences_false(x):
    k = keras.layers.Bidirectional(keras.layers.GRU(5))
    k(x.numpy())
    randomize(k)
    want = keras_out(k, x)  # (B, 2H): forward's last step, backward's after reading all
    s = from_keras(k)
    with torch.no_grad():
        _, h_n = s(x)
    close(torch.cat([h_n[0], h_n[1]], -1), want)


def stacked_model(x, second="lstm"):
    m = keras.Sequential([
        keras.Input((None, 4)),
        keras.layers.LSTM(6, return_sequences=True),
        KINDS[second](units=6, return_sequences=True),
    ])  # fmt: skip
    m(x.numpy())
    for lay in m.layers:
        randomize(lay)
    return m


def test_stacked_sequential_becomes_one_multilayer_layer(x):
    m = stacked_model(x)
    s = from_keras(m)
    assert isinstance(s, seqlab.LSTM) and s.num_layers == 2
    want = keras_out(m, x)
    with torch.no_grad():
        close(s(x)[0], want)
    back = to_keras(s)
    assert isinstance(back, keras.Sequential)
    close(keras_out(back, x), want)


def test_mixed_stack_becomes_stacked(x):
    m = stacked_model(x, second="gru_reset_before")
    s = from_keras(m)
    assert isinstance(s, seqlab.Stacked)
    want = keras_out(m, x)
    with torch.no_grad():
        close(s(x)[0], want)
    close(keras_out(to_keras(s), x), want)


def test_from_files(tmp_path, x):
    m = stacked_model(x, second="gru_reset_after")
    want = keras_out(m, x)
    m.save(tmp_path / "m.keras")
    with torch.no_grad():
        close(from_keras(tmp_path / "m.keras")(x)[0], want)
    m.save_weights(tmp_path / "m.weights.h5")
    template = stacked_model(x, second="gru_reset_after")
    for lay in template.layers:  # different weights until the file is loaded
        randomize(lay, scale=0.1)
    with torch.no_grad():
        close(from_keras(tmp_path / "m.weights.h5", template=template)(x)[0], want)
    with pytest.raises(ValueError, match="template"):
        from_keras(tmp_path / "m.weights.h5")


def test_clear_errors(x, tmp_path):
    dense = keras.layers.Dense(3)
    dense(x.numpy())
    with pytest.raises(TypeError, match="Dense"):
        from_keras(dense)
    hard = keras.layers.LSTM(3, recurrent_activation="hard_sigmoid")
    hard(x.numpy())
    with pytest.raises(ValueError, match="recurrent_activation"):
        from_keras(hard)
    masked = keras.Sequential(
        [keras.Input((None, 4)), keras.layers.Masking(), keras.layers.LSTM(3)]
    )
    masked(x.numpy())
    with pytest.raises(ValueError, match="lengths"):
        from_keras(masked)
    inp = keras.Input((None, 4))
    functional = keras.Model(inp, keras.layers.GRU(3)(inp))
    with pytest.raises(TypeError, match="Sequential"):
        from_keras(functional)
    with pytest.raises(FileNotFoundError):
        from_keras(tmp_path / "missing.keras")
    with pytest.raises(TypeError, match="module"):
        to_keras(torch.nn.Linear(2, 2))
