"""The inspect page in a real headless browser (skipped when no Chromium/Chrome is installed).

Two loads: the page as written must log nothing to the console (it has no scripts, so any
console message is an error Chromium reports); a copy with a small checking script appended
(the test's, not the page's) must report that every image decoded with a non-zero size. A
screenshot must hold the colours of the heatmaps.
"""

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from seqlab.cli import main

BROWSER = next(
    (b for b in ("chromium", "chromium-browser", "google-chrome", "chrome") if shutil.which(b)),
    None,
)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no Chromium/Chrome browser installed")

CHECK = """<script>
window.addEventListener("load", () => {
  const imgs = [...document.images];
  const bad = imgs.filter((i) => !i.complete || i.naturalWidth === 0);
  console.log(bad.length ? "IMAGES-BROKEN " + bad.length : "IMAGES-OK " + imgs.length);
});
</script>"""


def browse(url: str, screenshot: Path) -> str:
    """Chromium's stderr log (console messages appear as ``CONSOLE`` lines)."""
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            [BROWSER, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--no-first-run", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
             "--window-size=1280,1800", f"--screenshot={screenshot}", url],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stderr


def console_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if ":CONSOLE" in line]


def test_inspect_page_renders_in_chromium_without_console_errors(tmp_path):
    runs = tmp_path / "runs"
    tiny = ["--limit", "1", "--set", "hidden=16", "--set", "embed=8", "--set", "batch_size=4",
            "--set", "bptt=16", "--set", "eval_every=3", "--set", "eval_chars=400", "--set",
            "baseline_order=0", "--set", "sample_chars=10"]  # fmt: skip
    args = ["train", "shakespeare", *tiny, "--max-steps", "3", "--threads", "1", "-q",
            "--runs-dir", str(runs)]  # fmt: skip
    assert CliRunner().invoke(main, args, catch_exceptions=False).exit_code == 0
    (run,) = list(runs.iterdir())
    result = CliRunner().invoke(main, ["inspect", str(run)], catch_exceptions=False)
    page = Path(result.output.strip().splitlines()[-1])

    shot = tmp_path / "page.png"
    log = browse(page.as_uri(), shot)
    assert console_lines(log) == []

    checked = tmp_path / "checked.html"
    checked.write_text(page.read_text().replace("</body>", CHECK + "</body>"))
    n_imgs = page.read_text().count("<img ")
    lines = console_lines(browse(checked.as_uri(), tmp_path / "checked.png"))
    assert len(lines) == 1 and f'"IMAGES-OK {n_imgs}"' in lines[0], lines

    img = Image.open(shot).convert("RGB")
    assert img.size == (1280, 1800)
    colours = img.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 200  # heatmaps, not a blank page
