"""The quick-start in seqlab.training's docstring runs as written and learns."""

import textwrap

import seqlab.training
from seqlab.training import MetricsFile, load_checkpoint


def _quickstart() -> str:
    doc = seqlab.training.__doc__
    block = doc.split("::\n", 1)[1].split("\nModules:", 1)[0]
    return textwrap.dedent(block)


def test_quickstart_runs_and_reduces_loss(tmp_path):
    scope = {"run_dir": str(tmp_path)}
    exec(compile(_quickstart(), "seqlab.training quick start", "exec"), scope)
    losses, result = scope["losses"], scope["result"]
    # 2 epochs x ((N − 1) // 4 tokens per stream // 16) windows x 2 TBPTT windows each
    n = len(scope["ids"])
    assert n == 840
    assert result.steps == len(losses) == 2 * ((n - 1) // 4 // 16) * 2
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    assert [e["step"] for e in result.evals][:2] == [5, 10]
    _, meta = load_checkpoint(result.last_path)
    assert meta["model_config"] == {"V": len(scope["vocab"]), "H": 32}
    assert len(MetricsFile.read(tmp_path / "metrics.jsonl")) > result.steps
