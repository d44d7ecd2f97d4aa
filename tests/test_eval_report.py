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
import pytest

from vlmkit.errors import VlmkitError
from vlmkit.eval.compare import CompareResult, compare
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


@pytest.fixture(scope="module")
def quantized(zoo, tmp_path_factory):
    """zoo:llama and its RTN W4 export by ``vlmkit quantize``, HF and GGUF (the record the report reads is beside
    each)."""
    from vlmkit.quant.pipeline import quantize

    source, out = zoo("llama"), tmp_path_factory.mktemp("quantized") / "w4"
    result = quantize(source, out, method="rtn", bits=4, group_size=32, calib="demo", samples=4, held_out=2,
                      format="both", gguf_type="q4_0", progress=False)
    return source, out, result


def test_every_figure_renders_in_chromium(tmp_path, quantized):
    """Every section, the comparison being a real one: zoo:llama against its quantized export."""
    source, out, result = quantized
    sections = _sample_sections()
    sections["compare"] = compare(source, out, "corpus", ctx=64)
    page = write_report(tmp_path / "report.html", "w4 vs source", **sections)
    html = page.read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html and "<script" not in html  # self-contained
    images = rendered_images(page)
    assert [alt for alt, _, _ in images] == ["accuracy per category", "KLD histogram", "KLD per token position",
                                             "quantization error per layer"]
    assert all(width > 200 and height > 100 for _, width, height in images), images
    assert "Same top p" in html and "decode tok/s" in html and "99.9% KLD" in html
    # the per-layer table holds the quantizer's own numbers: one row per block, one cell per quantized Linear
    table = re.search(r"<table><tr><th>block</th>(.*?)</table>", html).group(1)
    cells = re.findall(r"<td>([^<]*)</td>", table)
    assert sorted(cells) == sorted([str(b) for b in {x["block"] for x in result.layers}]
                                   + [f"{x['relative_error']:.4g}" for x in result.layers])
    assert 0 < min(x["relative_error"] for x in result.layers) < max(x["relative_error"] for x in result.layers) < 1


def test_compare_reads_the_quantizers_record(quantized):
    """The record beside the export is QuantizeResult's per-Linear error, also in a GGUF candidate's folder."""
    from vlmkit.quant.record import read_record

    source, out, result = quantized
    record = read_record(out)
    assert record["layers"] == result.layers and record["spec"] == json.loads(json.dumps(result.spec))
    assert record["quality"] == json.loads(json.dumps(result.quality, default=float))
    assert read_record(out / "config.json") == record  # a file in the folder finds the record of its folder
    gguf_record = read_record(out / "gguf" / "model.gguf")  # --format both: the GGUF folder has its own copy
    assert {k: v for k, v in gguf_record.items() if k != "file"} == {k: v for k, v in record.items() if k != "file"}
    assert read_record(source) is None                        # not quantized: no record, no error


def test_a_broken_record_is_one_line(tmp_path):
    from vlmkit.quant.record import QUANTIZATION_FILE, read_record

    (tmp_path / QUANTIZATION_FILE).write_text('{"format": "vlmkit-quantization/1", "layers": [{"name": "x"}]}')
    with pytest.raises(VlmkitError, match=f"{QUANTIZATION_FILE}.*'layers' list"):
        read_record(tmp_path)
    (tmp_path / QUANTIZATION_FILE).write_text("{")
    with pytest.raises(VlmkitError, match="not a readable quantization record"):
        read_record(tmp_path)


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
