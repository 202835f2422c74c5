"""Readers for the user's own data, one per task shape, with precise error reports.

Formats (UTF-8 unless ``encoding`` says otherwise; a header row is optional everywhere):

============== ============================ =====================================
task           file                         row
============== ============================ =====================================
language model plain text                   (the whole file is one stream)
classification CSV                          ``text,label`` (quote text with commas)
seq2seq        TSV                          ``source<TAB>target``
forecasting    CSV                          ``[time,]value`` (or pick ``column``)
============== ============================ =====================================
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from seqlab.data.errors import DataFileError


def read_text(path: str | Path, encoding: str = "utf-8") -> str:
    """Whole file as text. Empty files and undecodable bytes raise :class:`DataFileError`."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(path, "no such file")
    raw = path.read_bytes()
    try:
        text = raw.decode(encoding)
    except LookupError:
        raise DataFileError(path, f"unknown text encoding {encoding!r}") from None
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataFileError(
            path,
            f"cannot decode byte 0x{raw[e.start]:02x} as {encoding}; "
            "pass the file's encoding with --encoding (e.g. --encoding latin-1)",
            line,
        ) from None
    if not text.strip():
        raise DataFileError(path, "file is empty")
    return text


def _rows(path: Path, text: str, delimiter: str) -> list[tuple[int, list[str]]]:
    """(line number, fields) for every non-blank row; csv tracks physical line numbers."""
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    rows = []
    start = 1
    try:
        for fields in reader:
            if fields and any(f.strip() for f in fields):
                rows.append((start, fields))
            start = reader.line_num + 1
    except csv.Error as e:
        raise DataFileError(path, f"malformed row: {e}", reader.line_num) from None
    return rows


def read_labelled_csv(path: str | Path, encoding: str = "utf-8") -> list[tuple[str, str]]:
    """``text,label`` rows -> [(text, label)]. A first row naming both columns is a header,
    and its order wins (``label,text`` files are read by name)."""
    path = Path(path)
    rows = _rows(path, read_text(path, encoding), ",")
    order = _header_order(rows, ("text", "label"))
    if order is not None:
        rows = rows[1:]
    ti, li = order or (0, 1)
    out = []
    for line, fields in rows:
        if len(fields) != 2:
            raise DataFileError(
                path, f"expected 2 fields (text,label), found {len(fields)}: {fields!r}", line
            )
        text, label = fields[ti].strip(), fields[li].strip()
        if not text or not label:
            raise DataFileError(path, "empty text or label", line)
        out.append((text, label))
    if not out:
        raise DataFileError(path, "no data rows")
    return out


def _header_order(rows: list[tuple[int, list[str]]], names: tuple[str, str]) -> tuple | None:
    """Column indices of ``names`` when the first row is a header naming both columns in
    either order (``label,text`` is honoured by name), else None."""
    if not rows:
        return None
    head = [f.strip().lower() for f in rows[0][1]]
    if sorted(head) != sorted(names):
        return None
    return tuple(head.index(n) for n in names)


def read_pairs_tsv(path: str | Path, encoding: str = "utf-8") -> list[tuple[str, str]]:
    """``source<TAB>target`` lines -> [(source, target)]; a header naming both columns (in
    either order) sets which column is which."""
    path = Path(path)
    out = []
    si, ti = 0, 1
    for i, raw in enumerate(read_text(path, encoding).splitlines(), start=1):
        if not raw.strip():
            continue
        fields = raw.split("\t")
        if i == 1 and (order := _header_order([(1, fields)], ("source", "target"))) is not None:
            si, ti = order
            continue
        if len(fields) != 2:
            raise DataFileError(
                path, f"expected 2 tab-separated fields, found {len(fields)}: {raw!r}", i
            )
        src, tgt = fields[si].strip(), fields[ti].strip()
        if not src or not tgt:
            raise DataFileError(path, "empty source or target", i)
        out.append((src, tgt))
    if not out:
        raise DataFileError(path, "no data rows")
    return out


def read_series_csv(
    path: str | Path, column: str | int | None = None, encoding: str = "utf-8"
) -> tuple[list[str], list[float]]:
    """A time series from CSV -> (time labels, values).

    ``column`` picks the value column by header name or 0-based index; the default is the last
    column. A first row whose value field is not a number is a header. The first column is the
    time label when there are at least two columns, else the row number.
    """
    path = Path(path)
    rows = _rows(path, read_text(path, encoding), ",")
    header: list[str] | None = None
    if rows and (
        isinstance(column, str) or not _is_number(_pick(rows[0][1], column, None, path, 1))
    ):
        header = [f.strip() for f in rows[0][1]]
        rows = rows[1:]
    times, values = [], []
    for line, fields in rows:
        if header is not None and len(fields) != len(header):
            raise DataFileError(
                path, f"expected {len(header)} fields like the header, found {len(fields)}", line
            )
        cell = _pick(fields, column, header, path, line)
        try:
            v = float(cell)
        except ValueError:
            raise DataFileError(path, f"value {cell!r} is not a number", line) from None
        if not math.isfinite(v):
            raise DataFileError(path, f"value {cell!r} is not finite", line)
        times.append(fields[0].strip() if len(fields) > 1 else str(len(times)))
        values.append(v)
    if len(values) < 2:
        raise DataFileError(path, f"need at least 2 values, found {len(values)}")
    return times, values


def _pick(
    fields: list[str], column: str | int | None, header: list[str] | None, path: Path, line: int
) -> str:
    if column is None:
        return fields[-1].strip()
    if isinstance(column, str):
        if header is None or column not in header:
            raise DataFileError(path, f"column {column!r} not in header {header}", line)
        column = header.index(column)
    if not 0 <= column < len(fields):
        raise DataFileError(path, f"column {column} out of range for {len(fields)} fields", line)
    return fields[column].strip()


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True
