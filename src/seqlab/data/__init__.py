"""Datasets: the catalogue of real data in pinned packages, user-file readers, vocabularies,
batching and fixed splits."""

from seqlab.data.batching import (
    batch_indices,
    pad_batch,
    split_indices,
    stream_batches,
    tbptt_chunks,
)
from seqlab.data.catalogue import (
    CATALOGUE,
    DataPackageMissing,
    DatasetInfo,
    get_info,
    install,
    installed_version,
    locate,
)
from seqlab.data.errors import DataFileError
from seqlab.data.userfiles import read_labelled_csv, read_pairs_tsv, read_series_csv, read_text
from seqlab.data.vocab import BOS, EOS, PAD, SPECIALS, UNK, Vocab, word_tokens

__all__ = [
    "BOS",
    "CATALOGUE",
    "EOS",
    "PAD",
    "SPECIALS",
    "UNK",
    "DataFileError",
    "DataPackageMissing",
    "DatasetInfo",
    "Vocab",
    "batch_indices",
    "get_info",
    "install",
    "installed_version",
    "locate",
    "pad_batch",
    "read_labelled_csv",
    "read_pairs_tsv",
    "read_series_csv",
    "read_text",
    "split_indices",
    "stream_batches",
    "tbptt_chunks",
    "word_tokens",
]
