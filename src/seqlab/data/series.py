"""Loaders for aeon's JapaneseVowels and BasicMotions and scikit-learn's digits, read as files
from the wheels.

* JapaneseVowels (aeon): the sktime/aeon ``.ts`` format, one series per ``@data`` line,
  dimensions separated by ``:``, values by ``,``, the class label last. The official
  train/test split is the two files. BasicMotions (aeon) is read the same way.
* Handwritten digits (scikit-learn): ``digits.csv.gz``, 1,797 rows of 64 pixel values
  (0..16, an 8×8 image row by row) and the digit last.
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import torch
from torch import Tensor

from seqlab.data.catalogue import locate
from seqlab.data.errors import DataFileError


def read_ts(path: str | Path) -> tuple[list[Tensor], list[str], list[str]]:
    """A ``.ts`` file -> (series, each (T, D) float32; labels; the header's class list).

    Every series must have D dimensions of equal length (lengths may differ between series).
    """
    path = Path(path)
    series: list[Tensor] = []
    labels: list[str] = []
    classes: list[str] = []
    in_data = False
    with open(path, encoding="utf-8") as fh:
        for i, raw in enumerate(fh, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                low = line.lower()
                if low.startswith("@classlabel"):
                    classes = line.split()[2:]
                in_data = low == "@data"
                continue
            *dims, label = line.split(":")
            try:
                values = [[float(v) for v in d.split(",")] for d in dims]
            except ValueError as e:
                raise DataFileError(path, f"not a number: {e}", i) from None
            lengths = {len(v) for v in values}
            if not dims or len(lengths) != 1:
                raise DataFileError(
                    path, f"expected dimensions of one length, got lengths {sorted(lengths)}", i
                )
            if series and len(dims) != series[0].shape[1]:
                raise DataFileError(
                    path, f"expected {series[0].shape[1]} dimensions, got {len(dims)}", i
                )
            series.append(torch.tensor(values, dtype=torch.float32).T.contiguous())
            labels.append(label.strip())
    if not series:
        raise DataFileError(path, "no @data rows")
    return series, labels, classes


def japanese_vowels(split: str) -> tuple[list[Tensor], list[str]]:
    """The official ``train`` (270) or ``test`` (370) series, each (T, 12), and speaker labels."""
    if split not in ("train", "test"):
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    (path,) = [p for p in locate("japanese_vowels") if p.stem.endswith(split.upper())]
    series, labels, _ = read_ts(path)
    return series, labels


def basic_motions(split: str) -> tuple[list[Tensor], list[str]]:
    """The official ``train`` (40) or ``test`` (40) BasicMotions recordings, each (100, 6):
    accelerometer x, y, z then gyroscope x, y, z, sampled at 10 Hz; labels Standing, Running,
    Walking or Badminton (10 recordings of each per split)."""
    if split not in ("train", "test"):
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    (path,) = [p for p in locate("basic_motions") if p.stem.endswith(split.upper())]
    series, labels, _ = read_ts(path)
    return series, labels


def digits() -> tuple[Tensor, Tensor]:
    """(images (1797, 8, 8) float32 in [0, 1], labels (1797,) int64)."""
    (path,) = locate("digits")
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        rows = [r for r in csv.reader(fh) if r]
    for i, r in enumerate(rows, start=1):
        if len(r) != 65:
            raise DataFileError(path, f"expected 65 fields (64 pixels + label), got {len(r)}", i)
    data = torch.tensor([[float(v) for v in r] for r in rows])
    return (data[:, :64] / 16.0).reshape(-1, 8, 8), data[:, 64].long()
