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

from seqlab import decoding, losses, metrics
from seqlab.attention import (
    KVCache,
    LearnedPositionalEncoding,
    MultiHeadAttention,
    SinusoidalPositionalEncoding,
    scaled_dot_product_attention,
)
from seqlab.cells import Cell, GRUCell, LSTMCell, RNNCell
from seqlab.decoding import beam_search, greedy, sample
from seqlab.engine import backends
from seqlab.functional.cells import LSTMState
from seqlab.layers import GRU, LSTM, RNN, RecurrentLayer
from seqlab.losses import sequence_cross_entropy, sequence_mse
from seqlab.models import (
    ClassifierConfig,
    Generator,
    GeneratorConfig,
    LanguageModel,
    LanguageModelConfig,
    NGramLM,
    Seq2Seq,
    Seq2SeqConfig,
    SequenceClassifier,
    SequenceRegressor,
    SequenceTagger,
    TaggerConfig,
    WindowBaseline,
    WindowConfig,
    WindowMLP,
)
from seqlab.training import (
    TBPTT,
    TokenStreams,
    TrainConfig,
    Trainer,
    detach_state,
    hidden_grad_norms,
    seed_everything,
)
from seqlab.transformer import (
    TransformerDecoder,
    TransformerEncoder,
    TransformerLM,
    TransformerLMConfig,
    TransformerSeq2Seq,
    TransformerSeq2SeqConfig,
)
from seqlab.wrappers import Bidirectional, Recurrent, Stacked, TimeDistributed

__version__ = "0.1.0"

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "TBPTT",
    "Bidirectional",
    "Cell",
    "ClassifierConfig",
    "GRUCell",
    "Generator",
    "GeneratorConfig",
    "KVCache",
    "LSTMCell",
    "LSTMState",
    "LanguageModel",
    "LanguageModelConfig",
    "LearnedPositionalEncoding",
    "MultiHeadAttention",
    "NGramLM",
    "RNNCell",
    "Recurrent",
    "RecurrentLayer",
    "Seq2Seq",
    "Seq2SeqConfig",
    "SequenceClassifier",
    "SequenceRegressor",
    "SequenceTagger",
    "SinusoidalPositionalEncoding",
    "Stacked",
    "TaggerConfig",
    "TimeDistributed",
    "TokenStreams",
    "TrainConfig",
    "Trainer",
    "TransformerDecoder",
    "TransformerEncoder",
    "TransformerLM",
    "TransformerLMConfig",
    "TransformerSeq2Seq",
    "TransformerSeq2SeqConfig",
    "WindowBaseline",
    "WindowConfig",
    "WindowMLP",
    "backends",
    "beam_search",
    "decoding",
    "detach_state",
    "greedy",
    "hidden_grad_norms",
    "losses",
    "metrics",
    "sample",
    "scaled_dot_product_attention",
    "seed_everything",
    "sequence_cross_entropy",
    "sequence_mse",
]
