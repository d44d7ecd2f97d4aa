"""The HTML report opens in headless Chromium (Debian's chromium, installed by .ci/run) with every figure
decoded: a script added to a copy of the page lists each image's naturalWidth into the DOM that Chromium dumps."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from vlmkit.eval.compare import CompareResult
from vlmkit.eval.report import write_report
from vlmkit.eval.speed import SpeedResult
from vlmkit.eval.vqa import load_questions, scored
from vlmkit.metrics.kld import summarize, token_stats

PROBE = ('<script>window.addEventListener("load",()=>{const r=[...document.images].map(i=>[i.alt,i.naturalWidth,'
         'i.naturalHeight]);document.body.insertAdjacentHTML("beforeend","<pre id=probe>"+JSON.stringify(r)+"</pre>")})'
         '</script></body>')


def rendered_images(page: Path) -> list[list]:
    """[[alt, naturalWidth, naturalHeight], ...] as Chromium decoded them (no network, fresh profile)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is not installed (apt-get install -y chromium; .ci/run does)"
    probe = page.with_name("probe-" + page.name)
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE), encoding="utf-8")
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", f"--user-data-dir={profile}",
             "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
            capture_output=True, text=True, timeout=120)
    match = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout)
    assert match, f"no probe output from chromium: {done.stderr[-1500:]}"
    return json.loads(match.group(1))


def _sample_sections() -> dict:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(240, 40))
    stats = token_stats(ref, ref + 0.05 * rng.normal(size=ref.shape), rng.integers(0, 40, 240), np.arange(240) % 24)
    compare = CompareResult("f32.gguf", "q4_0.gguf", "corpus", 48, summarize(stats), stats, notes=["a note"])
    questions = load_questions("demo", 12)
    vqa = {"f32": scored(questions, [q.answer for q in questions]),
           "q4_0": scored(questions, ["Yes"] * len(questions))}
    speed = [SpeedResult("demo", "transformers", 3, 46, 2, 30.0, 1500.0, 80.0, 2.5, 400.0)]
    return {"compare": compare, "vqa": vqa, "speed": speed}


def test_every_figure_renders_in_chromium(tmp_path):
    page = write_report(tmp_path / "report.html", "demo q4_0 vs f32", **_sample_sections())
    html = page.read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html and "<script" not in html  # self-contained
    images = rendered_images(page)
    assert [alt for alt, _, _ in images] == ["accuracy per category", "KLD histogram", "KLD per token position"]
    assert all(width > 200 and height > 100 for _, width, height in images), images
    assert "Same top p" in html and "decode tok/s" in html and "99.9% KLD" in html


def test_the_probe_sees_a_broken_figure(tmp_path):
    """The check can fail: an image whose data does not decode has naturalWidth 0."""
    page = tmp_path / "broken.html"
    page.write_text('<!doctype html><html><body><img alt="x" src="data:image/png;base64,AAAA"></body></html>')
    assert rendered_images(page) == [["x", 0, 0]]


def test_cli_vqa_report(tmp_path):
    from typer.testing import CliRunner

    from vlmkit.cli import _register, app

    _register()
    out = tmp_path / "vqa.html"
    done = CliRunner().invoke(app, ["eval", "vqa", "demo", "--limit", "6", "--report", str(out), "--json"])
    assert done.exit_code == 0, done.output
    assert [w > 0 for _, w, _ in rendered_images(out)] == [True]
