"""Errors for user-supplied data files: always name the file and, when known, the line."""

from __future__ import annotations

from pathlib import Path


class DataFileError(ValueError):
    """A data file is empty, undecodable or has a malformed row.

    ``str(err)`` reads ``path:line: message`` (or ``path: message`` when no line applies), the
    form compilers use, so editors can jump to the row.
    """

    def __init__(self, path: str | Path, message: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")
