"""The Transformer built on seqlab.attention: layers, stacks, TransformerLM, TransformerSeq2Seq.

Both models implement the decoding protocol of seqlab.decoding (``start`` / ``step`` /
``reorder_state``) and take batch-first token tensors.
"""

from .convert import (
    decoder_layer_from_torch,
    decoder_layer_to_torch,
    encoder_layer_from_torch,
    encoder_layer_to_torch,
)
from .embedding import TokenEmbedding
from .layers import DecoderLayer, EncoderLayer
from .lm import LMState, TransformerLM, TransformerLMConfig
from .seq2seq import Seq2SeqState, TransformerSeq2Seq, TransformerSeq2SeqConfig
from .sequence import SequenceEncoder
from .stacks import LayerConfig, TransformerDecoder, TransformerEncoder

__all__ = [
    "DecoderLayer",
    "EncoderLayer",
    "LMState",
    "LayerConfig",
    "Seq2SeqState",
    "SequenceEncoder",
    "TokenEmbedding",
    "TransformerDecoder",
    "TransformerEncoder",
    "TransformerLM",
    "TransformerLMConfig",
    "TransformerSeq2Seq",
    "TransformerSeq2SeqConfig",
    "decoder_layer_from_torch",
    "decoder_layer_to_torch",
    "encoder_layer_from_torch",
    "encoder_layer_to_torch",
]
