"""The README's and the tutorial's Python examples run as written.

Each file's ```python blocks run in order in one namespace (a tutorial builds on its earlier
blocks), in a temporary working directory so the files they write go there.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(encoding="utf-8"), re.M | re.S)


def run_examples(doc: str) -> dict:
    blocks = python_blocks(ROOT / doc)
    assert blocks, f"{doc}: no ```python examples found"
    scope: dict = {"__name__": "__doc_example__"}
    for i, code in enumerate(blocks, 1):
        exec(compile(code, f"{doc} (python block {i})", "exec"), scope)
    return scope


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def test_readme_examples_run():
    scope = run_examples("README.md")
    assert scope["out"].shape == (4, 10, 32)


def test_tutorial_runs_and_does_what_it_says():
    scope = run_examples("docs/tutorial.md")
    assert (scope["result"].steps, scope["result"].stopped) == (40, "max_steps")
    assert scope["lm_result"].steps == 60  # max_steps wins over the one-pass default
    assert scope["last"] < 0.7 * scope["first"]  # the stream model learns
    assert scope["greedy"].tokens.shape == (1, 30)
    assert Path("runs/tutorial/lm.safetensors").is_file()
