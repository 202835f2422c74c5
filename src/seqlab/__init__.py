"""seqlab: neural sequence models with their own recurrence engine.

Cells compute one step, layers run the loop, wrappers compose, models give the
topologies, and ``seqlab.training`` trains any of them through time::

    import seqlab
    lstm = seqlab.LSTM(input_size=8, hidden_size=16, num_layers=2, batch_first=True)
    outputs, (h_n, c_n) = lstm(x, lengths=lengths)

Subpackages: :mod:`seqlab.functional` (pure step math, reference loop),
:mod:`seqlab.engine` (fast backends), :mod:`seqlab.models`, :mod:`seqlab.decoding`,
:mod:`seqlab.losses`, :mod:`seqlab.attention`, :mod:`seqlab.transformer`,
:mod:`seqlab.training`, :mod:`seqlab.metrics`.
"""

# Exports are imported on first access (PEP 562), so ``import seqlab`` and the ``seqlab`` command
# start without loading torch; ``from seqlab import LSTM`` works as before.
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> (module, attribute in it; None: the module itself)
_EXPORTS: dict[str, tuple[str, str | None]] = {
    "backends": ("seqlab.engine", "backends"),
    "beam_search": ("seqlab.decoding", "beam_search"),
    "Bidirectional": ("seqlab.wrappers", "Bidirectional"),
    "Cell": ("seqlab.cells", "Cell"),
    "ClassifierConfig": ("seqlab.models", "ClassifierConfig"),
    "decoding": ("seqlab.decoding", None),
    "detach_state": ("seqlab.training", "detach_state"),
    "Generator": ("seqlab.models", "Generator"),
    "GeneratorConfig": ("seqlab.models", "GeneratorConfig"),
    "greedy": ("seqlab.decoding", "greedy"),
    "GRU": ("seqlab.layers", "GRU"),
    "GRUCell": ("seqlab.cells", "GRUCell"),
    "hidden_grad_norms": ("seqlab.training", "hidden_grad_norms"),
    "KVCache": ("seqlab.attention", "KVCache"),
    "LanguageModel": ("seqlab.models", "LanguageModel"),
    "LanguageModelConfig": ("seqlab.models", "LanguageModelConfig"),
    "LearnedPositionalEncoding": ("seqlab.attention", "LearnedPositionalEncoding"),
    "load": ("seqlab.runs", "load"),  # seqlab.load(run_dir): a trained run
    "losses": ("seqlab.losses", None),
    "LSTM": ("seqlab.layers", "LSTM"),
    "LSTMCell": ("seqlab.cells", "LSTMCell"),
    "LSTMState": ("seqlab.functional.cells", "LSTMState"),
    "metrics": ("seqlab.metrics", None),
    "MultiHeadAttention": ("seqlab.attention", "MultiHeadAttention"),
    "NGramLM": ("seqlab.models", "NGramLM"),
    "Recurrent": ("seqlab.wrappers", "Recurrent"),
    "RecurrentLayer": ("seqlab.layers", "RecurrentLayer"),
    "RNN": ("seqlab.layers", "RNN"),
    "RNNCell": ("seqlab.cells", "RNNCell"),
    "sample": ("seqlab.decoding", "sample"),
    "scaled_dot_product_attention": ("seqlab.attention", "scaled_dot_product_attention"),
    "seed_everything": ("seqlab.training", "seed_everything"),
    "Seq2Seq": ("seqlab.models", "Seq2Seq"),
    "Seq2SeqConfig": ("seqlab.models", "Seq2SeqConfig"),
    "sequence_cross_entropy": ("seqlab.losses", "sequence_cross_entropy"),
    "sequence_mse": ("seqlab.losses", "sequence_mse"),
    "SequenceClassifier": ("seqlab.models", "SequenceClassifier"),
    "SequenceRegressor": ("seqlab.models", "SequenceRegressor"),
    "SequenceTagger": ("seqlab.models", "SequenceTagger"),
    "SinusoidalPositionalEncoding": ("seqlab.attention", "SinusoidalPositionalEncoding"),
    "Stacked": ("seqlab.wrappers", "Stacked"),
    "TaggerConfig": ("seqlab.models", "TaggerConfig"),
    "TBPTT": ("seqlab.training", "TBPTT"),
    "TimeDistributed": ("seqlab.wrappers", "TimeDistributed"),
    "TokenStreams": ("seqlab.training", "TokenStreams"),
    "TrainConfig": ("seqlab.training", "TrainConfig"),
    "Trainer": ("seqlab.training", "Trainer"),
    "TransformerDecoder": ("seqlab.transformer", "TransformerDecoder"),
    "TransformerEncoder": ("seqlab.transformer", "TransformerEncoder"),
    "TransformerLM": ("seqlab.transformer", "TransformerLM"),
    "TransformerLMConfig": ("seqlab.transformer", "TransformerLMConfig"),
    "TransformerSeq2Seq": ("seqlab.transformer", "TransformerSeq2Seq"),
    "TransformerSeq2SeqConfig": ("seqlab.transformer", "TransformerSeq2SeqConfig"),
    "WindowBaseline": ("seqlab.models", "WindowBaseline"),
    "WindowConfig": ("seqlab.models", "WindowConfig"),
    "WindowMLP": ("seqlab.models", "WindowMLP"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'seqlab' has no attribute {name!r}")
    module, attr = _EXPORTS[name]
    value = importlib.import_module(module)
    value = value if attr is None else getattr(value, attr)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
