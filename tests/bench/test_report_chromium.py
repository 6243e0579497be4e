"""The HTML report as a browser shows it: headless Chromium (Debian's ``chromium`` package).

`surefast report RUN` writes the report of a stored run (synthetic rows with a sweep, so every
kind of table and plot appears). Chromium then loads it twice: once with a small probe script
appended to a copy of the page, which records after loading whether each image decoded
(``naturalWidth``) and any script error, read back from ``--dump-dom``; once as is, for a
screenshot that must not be blank. Console messages come from ``--enable-logging=stderr``: the
report has no scripts, so any console message from it is an error. Skips without chromium
(``apt-get install chromium``; ``make test`` installs it where it can).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from surefast.bench.store import Store

from .test_analysis import write_synthetic_study

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not found (Debian: apt-get install chromium; `make test` tries)"
)

PROBE = """<script>
window.__errors = [];
window.addEventListener("error", e => window.__errors.push(String(e.message || e.target && e.target.src)), true);
window.addEventListener("load", () => {
  const imgs = [...document.images].map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth}));
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify({imgs, errors: window.__errors});
  document.body.appendChild(pre);
});
</script>"""


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=10000",
    ]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=None)


def console_lines(stderr: str) -> list[str]:
    """Chromium's relay of the page's console (messages, uncaught errors), one line each."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


@pytest.fixture
def report(tmp_path: Path) -> Path:
    store = Store(tmp_path / "store")
    run = write_synthetic_study(store, ("mmlu", "halu_dialogue"), {"fam-0.5b": 0.5e9, "fam-1.5b": 1.5e9})
    out = tmp_path / "report"
    cmd = [sys.executable, "-m", "surefast", "report", run.run_id, "--store", str(store.root), "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return out / "report.html"


def test_report_renders_with_tables_images_and_no_errors(report: Path, tmp_path: Path):
    page = report.read_text()
    n_images = len(re.findall(r"<img ", page))
    assert n_images == 1 + 2 + 1  # scatter, the wanda sweep on each model, coverage

    probed = report.with_name("probed.html")
    probed.write_text(page.replace("</body>", PROBE + "</body>"))
    dumped = chromium(tmp_path / "profile", "--dump-dom", probed.as_uri())
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = dumped.stdout
    assert dom.count("<table>") == 2 and dom.count("<tr>") >= 1 + 2 * 7
    for heading in (
        "Findings",
        "Main table",
        "Per task",
        "Accuracy vs uncertainty",
        "Sweep: wanda on fam-0.5b",
        "Coverage",
    ):
        assert f"<h2>{heading}" in dom, heading
    probe = json.loads(re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)[1].replace("&quot;", '"'))
    assert len(probe["imgs"]) == n_images
    assert all(img["complete"] and img["width"] > 100 for img in probe["imgs"]), probe["imgs"]
    assert probe["errors"] == []
    assert console_lines(dumped.stderr) == []

    shot = tmp_path / "shot.png"
    shown = chromium(tmp_path / "profile", f"--screenshot={shot}", "--window-size=1200,2400", report.as_uri())
    assert shown.returncode == 0 and shot.is_file(), shown.stderr[-2000:]
    assert console_lines(shown.stderr) == []
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)  # [H, W, C] in [0, 1]
    assert pixels.shape[:2] == (2400, 1200)
    dark = (pixels[..., :3].mean(axis=-1) < 0.5).mean()
    assert 0.005 < dark < 0.5, f"{dark:.1%} dark pixels: blank or broken page"
    assert np.unique(pixels[..., :3].reshape(-1, 3), axis=0).shape[0] > 50  # text and coloured plots


def test_the_probe_sees_broken_images_and_script_errors(tmp_path: Path):
    """The checks above can fail: a page with a broken image and a script error trips them."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<!doctype html><html><body><img alt="x" src="data:image/png;base64,AAAA">'
        "<script>console.error('boom'); undefinedFunction();</script>" + PROBE + "</body></html>"
    )
    dumped = chromium(tmp_path / "profile", "--dump-dom", bad.as_uri())
    probe = json.loads(re.search(r'<pre id="probe">(.*?)</pre>', dumped.stdout, re.S)[1].replace("&quot;", '"'))
    assert probe["imgs"][0]["width"] == 0
    assert any("boom" in line for line in console_lines(dumped.stderr))
    assert any("undefinedFunction" in line for line in console_lines(dumped.stderr))
