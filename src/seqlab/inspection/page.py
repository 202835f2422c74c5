"""A self-contained HTML page: inline CSS, every image a base64 PNG, no scripts or links.

The PNGs are also written next to the page, so they can be reused on their own.
"""

from __future__ import annotations

import base64
import html
import io
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:1.5em auto;max-width:1200px;
color:#222;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;
margin-top:1.6em} h3{margin-bottom:.3em}
.meta{color:#555} img{max-width:100%;height:auto;border:1px solid #eee;margin:.3em 0}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left} th{background:#f4f4f4}
code,pre{background:#f6f6f6;padding:.1em .3em} pre{padding:.6em;overflow-x:auto}
figure{margin:.6em 0} figcaption{color:#555;font-size:.9em}
"""


@dataclass
class Section:
    """A heading, paragraphs (HTML-escaped), tables and figures, and sub-sections."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[tuple[list[str], list[list[object]]]] = field(default_factory=list)
    figures: list[tuple[str, Figure, str]] = field(default_factory=list)  # (stem, fig, caption)
    children: list[Section] = field(default_factory=list)


def _cell(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def table_html(header: list[str], rows: list[list[object]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder, so no half-written file is left."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the page and PNGs are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def render(title: str, meta: list[str], sections: list[Section], page: Path,
           png_dir: Path) -> list[Path]:  # fmt: skip
    """Write ``page`` and one PNG per figure into ``png_dir``; returns the PNG paths."""
    png_dir.mkdir(parents=True, exist_ok=True)
    pngs: list[Path] = []
    used: set[str] = set()

    def section(s: Section, level: int) -> str:
        parts = [f"<h{level}>{html.escape(s.title)}</h{level}>"]
        parts += [f"<p>{html.escape(p)}</p>" for p in s.paragraphs]
        parts += [table_html(h, r) for h, r in s.tables]
        for stem, fig, caption in s.figures:
            name, n = stem, 1
            while name in used:
                n += 1
                name = f"{stem}-{n}"
            used.add(name)
            data = _png(fig)
            path = png_dir / f"{name}.png"
            atomic_write(path, data)
            pngs.append(path)
            b64 = base64.b64encode(data).decode("ascii")
            alt = html.escape(caption or stem)
            parts.append(
                f'<figure><img alt="{alt}" src="data:image/png;base64,{b64}">'
                f"<figcaption>{alt}</figcaption></figure>"
            )
        parts += [section(c, min(level + 1, 4)) for c in s.children]
        return "\n".join(parts)

    body = "\n".join(section(s, 2) for s in sections)
    metas = "".join(f'<p class="meta">{html.escape(m)}</p>' for m in meta)
    doc = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<link rel="icon" href="data:,">'  # no favicon request
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{metas}\n{body}\n</body></html>\n"
    )
    atomic_write(page, doc.encode("utf-8"))
    return pngs
