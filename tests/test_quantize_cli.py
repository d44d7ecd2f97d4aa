"""`vlmkit quantize` end to end: --json fields, the rich report, text / VQA calibration sources, one-line errors
and nothing half written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vlmkit.cli import _register, app
from vlmkit.errors import VlmkitError
from vlmkit.quant.pipeline import quantize

_register()


def invoke(*args: str):
    return CliRunner().invoke(app, ["quantize", *args])


def test_json_says_what_was_quantized_kept_and_why(zoo, tmp_path: Path) -> None:
    texts = tmp_path / "calib.txt"
    texts.write_text("\n".join(f"Sentence number {i} about a red square and a blue circle." for i in range(9)))
    result = invoke(str(zoo("llava-calm2-siglip")), "--method", "rtn", "--bits", "8", "--calib", str(texts),
                    "--samples", "6", "--out", str(tmp_path / "q"), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) >= {"quantized", "kept", "layers", "quality", "timings", "peak_rss_mb", "files", "spec"}
    assert report["spec"]["scheme"] == "W8A16" and report["peak_rss_mb"] > 0
    assert report["quality"]["held-out texts"]["n_samples"] == 3  # the 3 lines after the 6 calibration ones
    assert report["kept"]["model.multi_modal_projector.linear_1"] == "projector kept at source precision (default)"
    assert report["kept"]["lm_head"] == "head kept at source precision (default)"
    assert len(report["layers"]) == len(report["quantized"]) == 14
    fingerprints = json.loads((tmp_path / "q" / "vlmkit_calibration.json").read_text())
    assert all(s["image_sha256"] is None for s in fingerprints["sample_hashes"])


def test_report_renders_for_a_vqa_folder(zoo, tmp_path: Path) -> None:
    from vlmkit.demo.dataset import write_split

    write_split(tmp_path / "vqa", "train", n=4, seed=3)
    result = invoke(str(zoo("llava-clip")), "--method", "gptq", "--calib", str(tmp_path / "vqa"), "--samples", "8",
                    "--out", str(tmp_path / "q"))
    assert result.exit_code == 0, result.output
    assert "relative output error" in result.output and "held-out image questions" in result.output
    fingerprints = json.loads((tmp_path / "q" / "vlmkit_calibration.json").read_text())
    assert fingerprints["n_samples"] == 8 and fingerprints["sample_hashes"][0]["image_file"].endswith(".png")


def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "q"
    done = subprocess.run([sys.executable, "-m", "vlmkit", "quantize", "zoo:llama", "--calib", str(tmp_path / "nope"),
                           "--out", str(out)], capture_output=True, text=True, check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: ") and "calibration source not found" in done.stderr
    cases = [({"method": "smooth"}, "--method smooth"), ({"bits": 3}, "--bits 3"),
             ({"exclude": (".*",)}, "nothing to quantize"), ({"format": "onnx"}, "--format onnx")]
    for kwargs, message in cases:
        with pytest.raises(VlmkitError, match=message):
            quantize("zoo:llama", out, samples=2, held_out=1, progress=False, **kwargs)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_help_has_an_example() -> None:
    result = CliRunner().invoke(app, ["quantize", "--help"])
    assert result.exit_code == 0 and "Example: vlmkit quantize" in result.output


PARENT = """
import subprocess, sys
held = bytearray(b"\\x01") * (1 << 30)  # 1 GiB written, so resident
done = subprocess.run([sys.executable, "-c", sys.argv[1], *sys.argv[2:]], capture_output=True, text=True)
print(done.stdout if done.returncode == 0 else done.stderr)
"""
CHILD = """
import json, resource, sys
from vlmkit.quant.pipeline import quantize
result = quantize(sys.argv[1], sys.argv[2], method="rtn", samples=2, held_out=1, progress=False)
print(json.dumps([result.peak_rss_mb, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024]))
"""


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="VmHWM is Linux's")
def test_peak_rss_is_the_process_own_not_its_parents(zoo, tmp_path: Path) -> None:
    """quantize started by a process holding 1 GiB: ru_maxrss reports the parent's gigabyte (Linux carries it
    through fork and exec), the result's peak_rss_mb (VmHWM) only the quantize process's own ~0.4 GB."""
    done = subprocess.run([sys.executable, "-c", PARENT, CHILD, str(zoo("llama")), str(tmp_path / "q")],
                          capture_output=True, text=True, check=True)
    ours, inherited = json.loads(done.stdout.strip().splitlines()[-1])
    assert inherited > 1024 and 100 < ours < 900, (ours, inherited)


def test_running_the_export_shows_no_third_party_progress_bar(zoo, tmp_path: Path) -> None:
    """compressed-tensors decompresses the export at the first forward with its own tqdm bar: `vlmkit run` does it
    while loading, quietly (shown with --verbose), and answers with the same tokens either way."""
    quantize(zoo("llama"), tmp_path / "q", method="rtn", calib="demo", samples=2, held_out=1, progress=False)
    runs = [subprocess.run([sys.executable, "-m", "vlmkit", "run", str(tmp_path / "q"), "--prompt", "Hello",
                            "--max-new-tokens", "3", "--json", *extra], capture_output=True, text=True)
            for extra in ((), ("--verbose",))]
    assert all(run.returncode == 0 for run in runs), [run.stderr[-500:] for run in runs]
    assert "Decompressing model" not in runs[0].stderr and "Decompressing model" in runs[1].stderr
    quiet, verbose = (json.loads(run.stdout) for run in runs)
    assert quiet["token_ids"] == verbose["token_ids"] and len(quiet["token_ids"]) == 3
