"""Every recipe setting with its meaning and default, for ``seqlab train TASK --help``.

The meaning of a setting is the comment on its line in the config dataclass
(``hidden: int = 384  # units per recurrent layer``): one place for code and documentation,
read with :mod:`tokenize`. A field of a subclass hides the base class's field of that name,
and inherits the base's comment when it has none of its own (a changed default only).
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import re
import textwrap
import tokenize
from typing import Any

_FIELD = re.compile(r"^\s*([A-Za-z_]\w*)\s*:")


def _comments(cls: type) -> dict[str, str]:
    """``{field: comment}`` for the annotated lines of ``cls``'s own class body."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    lines = source.splitlines()
    out: dict[str, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type != tokenize.COMMENT:
            continue
        m = _FIELD.match(lines[tok.start[0] - 1])
        if m and "fmt:" not in tok.string:
            out[m.group(1)] = tok.string.lstrip("#").strip()
    return out


def setting_docs(cls: type) -> list[tuple[str, Any, str]]:
    """``(name, default, meaning)`` for every field of the config dataclass ``cls``, in
    definition order; the meaning is "" for an undocumented field."""
    meaning: dict[str, str] = {}
    for klass in reversed(cls.__mro__):  # base first, so a subclass comment wins
        if dataclasses.is_dataclass(klass):
            meaning.update(_comments(klass))
    default = cls()
    return [
        (f.name, getattr(default, f.name), meaning.get(f.name, "")) for f in dataclasses.fields(cls)
    ]


def settings_help(cls: type) -> list[str]:
    """One line per setting: ``name = default  meaning``, aligned."""
    docs = setting_docs(cls)
    width = max(len(f"{n} = {d!r}") for n, d, _ in docs)
    return [f"{f'{n} = {d!r}':<{width}}  {m}".rstrip() for n, d, m in docs]
