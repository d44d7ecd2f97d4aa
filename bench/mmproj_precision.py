"""mmproj precision at full size: an f16 and a q8_0 mmproj.gguf next to the same model.gguf (issue 12).

    flock -x /tmp/vlmkit-heavy.lock nice -n 5 env PYTHONPATH=$PWD python3 -m bench.mmproj_precision \\
        --source /tmp/vlmkit-seed-scale/llava-calm2-siglip-32L-27V-seed0 \\
        --f16 /tmp/vlmkit-seed-scale/outputs-llava-calm2-siglip-32L-27V-seed0/out-q4_k_m \\
        --work /tmp/mmproj12 --image /tmp/vlmkit-seed-scale/astronaut-384.png

``--f16`` is a ``vlmkit convert`` output (model.gguf + its f16 mmproj.gguf), never changed. The q8_0 mmproj is
written from ``--source`` with the same ``vlmkit.conversion_id`` into ``--work/q8_0`` beside a hard link to the
same model.gguf. Then ``vlmkit run`` (one image, 64 new tokens, ``--json``) on the two folders, alternating,
``--runs`` times each, under ``/usr/bin/time`` (wall, peak RSS); last, each mmproj's image embeddings against
transformers at f32 on the same image (the tower and projector only: ``vlmkit.quant.capture.StagedModel``
holds one decoder block of the language model, which the embeddings never use). Prints a table with q8_0 /
f16 ratios and writes ``--work/results.json``; ``--keep`` leaves the q8_0 folder (default: removed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROMPT = "What is in this picture? Describe it in detail."


def write_q8_0(source: Path, f16_dir: Path, out: Path) -> dict:
    from vlmkit.gguf.mmproj import write_mmproj
    from vlmkit.gguf_keys import KEY_CONVERSION_ID
    from vlmkit.runtime.llamacpp_backend import gguf_field

    out.mkdir(parents=True, exist_ok=True)
    conversion_id = gguf_field(f16_dir / "model.gguf", KEY_CONVERSION_ID)
    config = json.loads((source / "config.json").read_text())
    start = time.perf_counter()
    result = write_mmproj(source, config, None, out / "mmproj.gguf", dtype="q8_0", conversion_id=conversion_id)
    seconds = time.perf_counter() - start
    link = out / "model.gguf"
    link.unlink(missing_ok=True)
    os.link(f16_dir / "model.gguf", link)
    kept = {}
    for why in result.kept.values():
        kept[why] = kept.get(why, 0) + 1
    return {"write_s": round(seconds, 1), "conversion_id": conversion_id, "kept": kept}


def timed_run(folder: Path, image: Path, tokens: int) -> dict:
    command = ["/usr/bin/time", "-f", "TIME %e s %M KB", sys.executable, "-m", "vlmkit", "run", str(folder),
               "--image", str(image), "--prompt", PROMPT, "--max-new-tokens", str(tokens), "--json"]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    wall, rss = next(line.split()[1:4:2] for line in done.stderr.splitlines() if line.startswith("TIME "))
    answer = json.loads(done.stdout)
    return {"wall_s": float(wall), "peak_rss_mb": int(rss) / 1024, "ttft_s": answer["time_to_first_token_s"],
            "text": answer.get("text", "")}


def agreement(source: Path, folders: dict[str, Path], image: Path) -> dict:
    from vlmkit.eval.image_parity import verify_image_embeddings
    from vlmkit.families import family_for
    from vlmkit.quant.capture import StagedModel
    from vlmkit.readers import open_checkpoint
    from vlmkit.runtime.transformers_backend import TransformersBackend

    backend = TransformersBackend(source, device="cpu", dtype="f32", load_weights=False)
    with open_checkpoint(source) as checkpoint:
        family, _ = family_for(json.loads((source / "config.json").read_text()), list(checkpoint.infos))
        model = StagedModel(source, checkpoint, family, backend.auto_class).model
    out = {}
    for name, folder in folders.items():
        report = verify_image_embeddings(source, folder, image, model=model)
        out[name] = {"one_minus_cosine": 1 - report["cosine"], "worst_token_one_minus_cosine":
                     1 - report["min_token_cosine"], "max_abs_diff_rel": report["max_abs_diff"] / report["ref_max_abs"]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--f16", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    folders = {"f16": args.f16, "q8_0": args.work / "q8_0"}
    results: dict = {"write": write_q8_0(args.source, args.f16, folders["q8_0"]), "runs": {k: [] for k in folders}}
    print(json.dumps(results["write"], indent=1), flush=True)
    try:
        for _ in range(args.runs):
            for name, folder in folders.items():
                run = timed_run(folder, args.image, args.tokens)
                print(name, {k: v for k, v in run.items() if k != "text"}, flush=True)
                results["runs"][name].append(run)
        results["agreement"] = agreement(args.source, folders, args.image)
        results["size_mb"] = {k: (f / "mmproj.gguf").stat().st_size / 2**20 for k, f in folders.items()}
        (args.work / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))
        table(results)
    finally:
        if not args.keep:
            shutil.rmtree(folders["q8_0"], ignore_errors=True)


def table(results: dict) -> None:
    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results["runs"][name])

    rows = [("mmproj.gguf MB", lambda n: results["size_mb"][n]), ("run wall s", lambda n: med(n, "wall_s")),
            ("time to first token s", lambda n: med(n, "ttft_s")), ("peak RSS MB", lambda n: med(n, "peak_rss_mb")),
            ("1 - cosine vs f32", lambda n: results["agreement"][n]["one_minus_cosine"]),
            ("worst token 1 - cosine", lambda n: results["agreement"][n]["worst_token_one_minus_cosine"]),
            ("max |diff| / max |ref|", lambda n: results["agreement"][n]["max_abs_diff_rel"])]
    print(f"{'':26}{'f16':>12}{'q8_0':>12}{'q8_0/f16':>10}")
    for label, value in rows:
        a, b = value("f16"), value("q8_0")
        print(f"{label:26}{a:12.4g}{b:12.4g}{b / a if a else float('nan'):10.3g}")
    same = [a["text"] == b["text"] for a, b in zip(results["runs"]["f16"], results["runs"]["q8_0"])]
    print(f"same answer text: {sum(same)}/{len(same)}")


if __name__ == "__main__":
    main()
