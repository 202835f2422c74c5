"""Ready-made sequence models composed from seqlab's recurrent layers.

Every model takes ``cell`` in {"rnn", "lstm", "gru", "indrnn"}, the ``choice`` names of the
cell descriptions (:func:`seqlab.functional.cell_choices`; one factory:
:func:`seqlab.models.encoders.make_recurrent`), a number of layers, bidirectional where it
makes sense, and batch-first inputs with optional ``lengths`` (B,).

Training convention: ``forward`` returns logits (or values), and every model has
``loss(batch: dict) -> scalar Tensor`` so a trainer only needs ``model.loss(batch)``.
Batch keys per model:

=====================  ===================================================================
model                  batch keys
=====================  ===================================================================
SequenceClassifier     inputs (B,T) ids or (B,T,I) floats, lengths?, targets (B,) / (B,C)
SequenceRegressor      inputs (B,T,I), lengths?, targets (B,O) or (B,)
SequenceTagger         inputs, lengths?, targets (B,T)
LanguageModel          inputs (B,T), targets (B,T), lengths?, state?
Generator              cond (B,K), tgt (B,T+1) = [bos, y…, eos, pad…], tgt_lengths?
Seq2Seq                src (B,S), src_lengths?, tgt (B,T+1) as above, tgt_lengths?
WindowMLP              as SequenceTagger (pooling="none") or SequenceClassifier ("last")
=====================  ===================================================================

``LanguageModel.loss(batch, state)`` (state may be None) returns ``(loss, new_state)``: the
TBPTT convention of :class:`seqlab.training.Trainer`; ``resets`` (B, T) from
``TokenStreams`` zero a row's state where a new document starts. ``Seq2Seq.teacher_forcing``
(default 1.0) is the scheduled-sampling ratio its ``loss`` uses; a trainer may anneal it.

Generative models (LanguageModel, Generator, Seq2Seq, NGramLM) follow the decoding protocol
of :mod:`seqlab.decoding` (``step``, ``reorder_state``, ``state_batch_size``), build their
initial state with ``start(...)`` and offer ``generate(...)``.
"""

from seqlab.models.attention import Attention, masked_softmax
from seqlab.models.baseline import NGramLM, WindowBaseline, WindowConfig, WindowMLP
from seqlab.models.classifier import ClassifierConfig, SequenceClassifier, SequenceRegressor
from seqlab.models.encoders import CellStack, RecurrentEncoder, detach_state, make_recurrent
from seqlab.models.generator import Generator, GeneratorConfig
from seqlab.models.language_model import LanguageModel, LanguageModelConfig
from seqlab.models.seq2seq import Seq2Seq, Seq2SeqConfig, Seq2SeqState
from seqlab.models.tagger import SequenceTagger, TaggerConfig

__all__ = [
    "Attention",
    "CellStack",
    "ClassifierConfig",
    "Generator",
    "GeneratorConfig",
    "LanguageModel",
    "LanguageModelConfig",
    "NGramLM",
    "RecurrentEncoder",
    "Seq2Seq",
    "Seq2SeqConfig",
    "Seq2SeqState",
    "SequenceClassifier",
    "SequenceRegressor",
    "SequenceTagger",
    "TaggerConfig",
    "WindowBaseline",
    "WindowConfig",
    "WindowMLP",
    "detach_state",
    "make_recurrent",
    "masked_softmax",
]
