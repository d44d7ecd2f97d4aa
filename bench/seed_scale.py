"""Seed scale (issue 12): a llava-calm2-siglip-shaped model through the whole pipeline on this machine.

    python -m bench.seed_scale                    # 7.46 B parameters, ~15 GB bf16; needs ~38 GB of disk, 30-45 min
    python -m bench.seed_scale --small            # same widths, 2 LM blocks: 1.37 B, minutes
    python -m bench.seed_scale --lm-layers 8 --steps inspect,convert

Builds once (cached under --workdir, seeded) a replica with random weights at the real shapes of
cyberagent/llava-calm2-siglip: SigLIP so400m-patch14-384 tower (1152 wide, 27 layers, MLP 4304, 16 heads),
LLaVA MLP projector, a calm2-7b Llama LM (4096 wide, 32 layers, 32 heads, MLP 11008), vocabulary 65,024 from a
byte-level BPE the bench trains (65,000 learned tokens, ``<image>`` after them, rows padded to 65,024), bf16,
sharded safetensors (<= 5 GB a shard, ``model.safetensors.index.json``) under the hub's on-disk names
(``language_model.model.*``, ``vision_tower.vision_model.*``), processor, chat template
(``USER: <image>\\n{q}\\nASSISTANT: ``), generation config. Weights are windows of one seeded random pool,
written tensor by tensor (the model is never materialised in torch); speed and memory do not depend on them.

Then one run measures, each step in its own process (peak RSS = that process's ru_maxrss):
``vlmkit inspect --memory`` (and its predictions against the peak RSS of the later steps), ``vlmkit convert``
to f16 against ``cp`` of the same bytes, to q8_0 and q4_k_m, the default-verified ``convert`` (which must
complete or explain itself), ``vlmkit run`` with one 384 px photograph and an English and a Japanese question
(64 new tokens) at q4_k_m and q8_0 against llama.cpp's own ``llama-mtmd-cli`` on the same files (built from
the llama.cpp tree of the installed llama-cpp-python, ``vlmkit.zoo.llamacpp_source.llama_tool``), and the
seed's own path, transformers bf16 on CPU, stopped after a few decode tokens and extrapolated to 64 (said
so in the table). Converted files are removed as soon as their step is done; ``--clean`` also removes the
cached replica at the end.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/ holds inspect.py: drop it from sys.path before anything imports the standard library's inspect
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

SEED = 0
SHARD_BYTES = 5 * 10**9           # the hub's max_shard_size="5GB"
LEARNED_TOKENS = 65000            # calm2: <image> = 65000, embedding rows padded to 65024
VOCAB_ROWS = 65024
IMAGE_SIZE, PATCH = 384, 14
QUESTIONS = {"en": "What is in this picture? Describe it in detail.",
             "ja": "この写真には何が写っていますか？詳しく説明してください。"}
TOKENS = 64
STEPS = ("inspect", "convert", "verify", "run", "mtmd-cli", "defaults", "transformers")
WEIGHT_STD = 0.02
POOL = (1 << 24) - 3              # odd: rows of a power-of-two width are not copies of each other


@dataclass(frozen=True)
class Shape:
    lm_layers: int = 32
    vision_layers: int = 27

    @property
    def key(self) -> str:
        return f"llava-calm2-siglip-{self.lm_layers}L-{self.vision_layers}V-seed{SEED}"


def model_config(shape: Shape):
    from transformers import LlamaConfig, LlavaConfig, SiglipVisionConfig

    text = LlamaConfig(vocab_size=VOCAB_ROWS, hidden_size=4096, intermediate_size=11008,
                       num_hidden_layers=shape.lm_layers, num_attention_heads=32, num_key_value_heads=32,
                       max_position_embeddings=4096, rms_norm_eps=1e-6, rope_theta=500000.0, bos_token_id=0,
                       eos_token_id=0, pad_token_id=1, tie_word_embeddings=False)
    vision = SiglipVisionConfig(hidden_size=1152, intermediate_size=4304, num_hidden_layers=shape.vision_layers,
                                num_attention_heads=16, image_size=IMAGE_SIZE, patch_size=PATCH,
                                hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)
    patches = (IMAGE_SIZE // PATCH) ** 2
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=LEARNED_TOKENS,
                         projector_hidden_act="gelu", vision_feature_layer=-2,
                         vision_feature_select_strategy="default", image_seq_length=patches - 1,
                         pad_token_id=1, eos_token_id=0)
    config.dtype = "bfloat16"
    return config


def tensor_plan(config) -> list[tuple[str, tuple[int, ...]]]:
    """(on-disk name, shape) of every tensor, from transformers' own module built on the meta device."""
    import torch
    from transformers import LlavaForConditionalGeneration

    from vlmkit.families.llava import export_name

    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    as_dict = config.to_dict()
    return [(export_name(name, as_dict), tuple(t.shape)) for name, t in model.state_dict().items()]


def random_tensors(plan: list[tuple[str, tuple[int, ...]]]):
    """Each tensor a window of one seeded pool of N(0, 0.02) values (norm weights around 1), as bf16."""
    import ml_dtypes

    rng = np.random.default_rng(SEED)
    pool = (rng.standard_normal(POOL, dtype=np.float32) * WEIGHT_STD).astype(ml_dtypes.bfloat16)
    for name, shape in plan:
        n = int(np.prod(shape))
        start = int(rng.integers(POOL))
        values = np.resize(np.roll(pool, -start)[: min(n, POOL)], n).reshape(shape)
        if len(shape) == 1 and "norm" in name and name.endswith("weight"):
            values = (values.astype(np.float32) + 1.0).astype(ml_dtypes.bfloat16)
        yield name, values


def write_shards(out: Path, plan: list[tuple[str, tuple[int, ...]]]) -> None:
    from vlmkit.export.safetensors_writer import write_safetensors

    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    size = 0
    for name, shape in plan:
        nbytes = int(np.prod(shape)) * 2
        if shards[-1] and size + nbytes > SHARD_BYTES:
            shards.append([])
            size = 0
        shards[-1].append((name, shape))
        size += nbytes
    tensors = random_tensors(plan)
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors(out / file, [(n, s, "BF16") for n, s in shard], (next(tensors) for _ in shard))
        weight_map.update({name: file for name, _ in shard})
    total = sum(int(np.prod(s)) * 2 for _, s in plan)
    (out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))


TOKENIZER_TEXT_BYTES = 96 << 20


def tokenizer_texts():
    """Text enough for 65,000 BPE merges without a download: the zoo's English + Japanese corpus and the
    first 96 MB of the installed Python sources, standard library first (sorted paths: the same text on every run)."""
    import sysconfig

    from vlmkit.zoo.corpus import CORPUS

    yield from CORPUS * 50
    budget = TOKENIZER_TEXT_BYTES
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in stdlib.rglob("*.py") if "site-packages" not in p.parts)
    files += sorted(Path(sysconfig.get_paths()["purelib"]).rglob("*.py"))
    for path in files:
        if budget <= 0:
            return
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        budget -= len(text)
        yield text


def trained_tokenizer(workdir: Path):
    """calm2's tokenizer layout with 65,000 learned tokens, trained once per workdir (shared by every shape)."""
    from transformers import AutoTokenizer

    from vlmkit.zoo.llava import calm2_tokenizer

    folder = workdir / f"tokenizer-{LEARNED_TOKENS}-seed{SEED}"
    if not (folder / "tokenizer.json").is_file():
        start = time.perf_counter()
        os.environ.setdefault("RAYON_NUM_THREADS", "1")   # tokenizers' training, deterministic
        tokenizer = calm2_tokenizer(LEARNED_TOKENS, tokenizer_texts())
        if tokenizer.convert_tokens_to_ids("<image>") != LEARNED_TOKENS:
            raise RuntimeError(f"the BPE learned {len(tokenizer) - 3} tokens, not {LEARNED_TOKENS}: more text needed")
        tmp = folder.with_name(folder.name + ".tmp")
        tokenizer.save_pretrained(str(tmp))
        os.replace(tmp, folder)
        print(f"tokenizer: {len(tokenizer)} tokens trained in {time.perf_counter() - start:.0f} s", flush=True)
    return AutoTokenizer.from_pretrained(folder)


def build(workdir: Path, shape: Shape) -> Path:
    """The replica (cached: built once per shape, renamed into place when complete)."""
    out = workdir / shape.key
    if (out / "config.json").is_file():
        return out
    from transformers import GenerationConfig, LlavaProcessor, SiglipImageProcessor

    from vlmkit.zoo.tokenizers import LLAVA_CHAT_TEMPLATE

    tmp = out.with_name(out.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    start = time.perf_counter()
    tokenizer = trained_tokenizer(workdir)
    config = model_config(shape)
    processor = LlavaProcessor(
        image_processor=SiglipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                                             image_mean=[0.5] * 3, image_std=[0.5] * 3, resample=3),
        tokenizer=tokenizer, patch_size=PATCH, vision_feature_select_strategy="default",
        num_additional_image_tokens=0, chat_template=LLAVA_CHAT_TEMPLATE)
    processor.save_pretrained(str(tmp))
    processor.image_processor.save_pretrained(str(tmp))
    config.save_pretrained(str(tmp))
    GenerationConfig(bos_token_id=0, eos_token_id=0, pad_token_id=1).save_pretrained(str(tmp))
    write_shards(tmp, tensor_plan(config))
    os.replace(tmp, out)
    print(f"replica: {out} built in {time.perf_counter() - start:.0f} s", flush=True)
    return out


def photo(workdir: Path) -> Path:
    """scikit-image's astronaut photograph at 384 x 384."""
    from PIL import Image
    from skimage import data

    path = workdir / "astronaut-384.png"
    if not path.is_file():
        Image.fromarray(data.astronaut()).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC).save(path)
    return path


# --- measuring -----------------------------------------------------------------------------------------

_WRAPPER = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
            "p = subprocess.run(sys.argv[1:], capture_output=True, text=True); dt = time.perf_counter() - t; "
            "sys.stderr.write(p.stderr); sys.stdout.write(p.stdout); "
            "print('\\n@@', p.returncode, dt, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


@dataclass
class Measured:
    seconds: float
    rss_mb: float
    stdout: str
    stderr: str
    rc: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def measure(cmd: list[str], check: bool = True, env: dict[str, str] | None = None) -> Measured:
    """Wall time and peak RSS of ``cmd`` as the only child of a fresh wrapper process."""
    subprocess.run(["sync"], check=True)
    done = subprocess.run([sys.executable, "-c", _WRAPPER, *map(str, cmd)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    body, _, tail = done.stdout.rpartition("\n@@ ")
    rc, seconds, rss_kb = tail.split()
    result = Measured(float(seconds), int(rss_kb) / 1024, body, done.stderr, int(rc))
    if check and result.rc != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd[:4]))} ... failed ({rc}):\n{done.stderr[-3000:]}")
    return result


VLMKIT = [sys.executable, "-m", "vlmkit"]


def disk_need(source_bytes: int, plan: list[tuple[str, tuple[int, ...]]]) -> int:
    """Peak disk beside the source: a q8_0 conversion (its bf16 intermediate + the q8_0 file) or the f16 one."""
    lm = sum(int(np.prod(s)) * 2 for n, s in plan if n.startswith("language_model."))
    vision = sum(int(np.prod(s)) * 2 for n, s in plan if not n.startswith("language_model."))
    return source_bytes + max(lm + vision, lm + lm * 34 // 64 + vision, source_bytes)


def gguf_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*.gguf"))


def step_inspect(model: Path, results: dict) -> None:
    m = measure([*VLMKIT, "inspect", model, "--memory", "--json"])
    report = json.loads(m.stdout)
    results["inspect"] = {"seconds": m.seconds, "rss_mb": m.rss_mb, "params": report.get("params"),
                          "memory": report.get("memory")}


def converted(out: Path) -> bool:
    """A finished conversion (convert publishes its folder only when complete)."""
    return (out / "model.gguf").is_file() and (out / "mmproj.gguf").is_file()


def step_convert(model: Path, work: Path, dtype: str, results: dict, verify: bool = False,
                 reuse: bool = False) -> Path:
    out = work / f"out-{dtype}{'-verified' if verify else ''}"
    if reuse and converted(out):
        return out
    shutil.rmtree(out, ignore_errors=True)
    flags = ["--json", "--threads", "2"] + ([] if verify else ["--no-verify"])
    m = measure([*VLMKIT, "convert", model, "--out", out, "--dtype", dtype, *flags], check=not verify)
    entry = {"seconds": m.seconds, "rss_mb": m.rss_mb, "gguf_bytes": gguf_bytes(out), "rc": m.rc}
    if verify:
        data = json.loads(m.stdout) if m.stdout.strip().startswith("{") else {}
        report = data.get("verify") or {}
        entry.update(verify_error=data.get("verify_error"), notes=data.get("notes"),
                     reference=report.get("reference"), ok=report.get("ok"),
                     teacher=report.get("teacher"), image=(report.get("image_greedy") or {}).get("teacher"),
                     stderr=m.stderr[-500:] if m.rc not in (0, 2) else None)
    results[f"convert {dtype}{' (default verify)' if verify else ''}"] = entry
    return out


def step_cp(model: Path, work: Path, results: dict) -> None:
    out = work / "cp"
    shutil.rmtree(out, ignore_errors=True)
    m = measure(["cp", "-r", model, out])
    results["cp"] = {"seconds": m.seconds, "rss_mb": m.rss_mb}
    shutil.rmtree(out)


# vlmkit.llamacpp.settings' alternatives, through `vlmkit run` itself (environment overrides)
VARIANTS = {"4 threads (llama.cpp library default)": {"VLMKIT_LLAMACPP_THREADS": "4"},
            "ubatch 2048": {"VLMKIT_LLAMACPP_UBATCH": "2048"},
            "flash attention off": {"VLMKIT_LLAMACPP_FLASH_ATTN": "0"},
            "flash attention on": {"VLMKIT_LLAMACPP_FLASH_ATTN": "1"},
            "weights read, not mapped": {"VLMKIT_LLAMACPP_MMAP": "0"}}


def step_run(gguf: Path, image: Path, label: str, results: dict, threads: int | None,
             languages: tuple[str, ...] = tuple(QUESTIONS), env: dict[str, str] | None = None) -> None:
    for lang in languages:
        extra = ["--threads", str(threads)] if threads else []
        m = measure([*VLMKIT, "run", gguf, "--image", image, "--prompt", QUESTIONS[lang], "--max-new-tokens",
                     TOKENS, "--json", *extra], env=env)
        data = json.loads(m.stdout.strip().splitlines()[-1])
        ttft = data["time_to_first_token_s"]
        results[f"run {label} {lang}"] = {
            "seconds": m.seconds, "rss_mb": m.rss_mb, "gguf_bytes": gguf_bytes(gguf),
            "load_s": round(m.seconds - data["total_s"], 2), "ttft_s": ttft,
            "prompt_tokens": data["prompt_tokens"], "prefill_tok_s": round(data["prompt_tokens"] / ttft, 1),
            "decode_tok_s": data["tokens_per_s"], "tokens": data["completion_tokens"]}


_MTMD_TIMES = {"load_ms": r"load time\s*=\s*([\d.]+) ms", "image_encode_ms": r"image slice encoded in (\d+) ms",
               "image_decode_ms": r"image decoded \(batch \d+/\d+\) in (\d+) ms",
               "prompt_eval": r"prompt eval time\s*=\s*([\d.]+) ms /\s*(\d+) tokens",
               "eval": r"\beval time\s*=\s*([\d.]+) ms /\s*(\d+) runs"}


def step_mtmd_cli(gguf: Path, image: Path, label: str, results: dict, threads: int) -> None:
    from vlmkit.zoo.llamacpp_source import llama_tool

    cli = llama_tool("llama-mtmd-cli")
    for lang, question in QUESTIONS.items():
        m = measure([cli, "-m", gguf / "model.gguf", "--mmproj", gguf / "mmproj.gguf", "--image", image,
                     "-p", question, "-n", TOKENS, "--temp", "0", "-t", threads, "--no-warmup", "-lv", "4"])
        log = m.stdout + m.stderr
        entry: dict[str, Any] = {"seconds": m.seconds, "rss_mb": m.rss_mb}
        for key, pattern in _MTMD_TIMES.items():
            found = re.findall(pattern, log)
            if found and isinstance(found[-1], tuple):
                ms, n = map(float, found[-1])
                entry[f"{key}_tok_s"] = round(n / (ms / 1000), 2) if ms else None
                entry[f"{key}_tokens"] = int(n)
            elif found:
                entry[key] = float(found[-1])
        results[f"llama-mtmd-cli {label} {lang}"] = entry


_TRANSFORMERS = r'''
import json, sys, threading, time
t0 = time.perf_counter()
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor
torch.set_num_threads(int(sys.argv[4]))
path, image, question, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[5])
processor = AutoProcessor.from_pretrained(path)
model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.bfloat16).eval()
loaded = time.perf_counter()
messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
inputs = processor(images=[Image.open(image).convert("RGB")], text=text, return_tensors="pt")
stamps = []
class Stamp:
    def put(self, value): stamps.append(time.perf_counter())
    def end(self): pass
start = time.perf_counter()
with torch.inference_mode():
    model.generate(**inputs, max_new_tokens=n, do_sample=False, streamer=Stamp(), min_new_tokens=n)
print(json.dumps({"load_s": loaded - t0, "prompt_tokens": int(inputs["input_ids"].shape[1]),
                  "stamps": [s - start for s in stamps[1:]]}))
'''


def step_transformers(model: Path, image: Path, results: dict, threads: int, n: int) -> None:
    """The seed's path (transformers bf16 on CPU): ``n`` tokens, extrapolated to 64."""
    question = QUESTIONS["en"]
    m = measure([sys.executable, "-c", _TRANSFORMERS, model, image, question, threads, n])
    data = json.loads(m.stdout.strip().splitlines()[-1])
    stamps = data["stamps"]
    decode = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else None
    total = data["load_s"] + stamps[0] + (TOKENS - 1) * (decode or 0)
    results["transformers bf16 en"] = {
        "seconds_measured": m.seconds, "rss_mb": m.rss_mb, "load_s": round(data["load_s"], 2),
        "ttft_s": round(stamps[0], 2), "prompt_tokens": data["prompt_tokens"],
        "prefill_tok_s": round(data["prompt_tokens"] / stamps[0], 2),
        "decode_tok_s": round(1 / decode, 3) if decode else None, "tokens_measured": len(stamps),
        "seconds": round(total, 1), "extrapolated": f"{len(stamps)} tokens measured, {TOKENS} extrapolated"}


# --- the table -----------------------------------------------------------------------------------------

def prediction(results: dict, scheme: str) -> float | None:
    """``inspect --memory``'s predicted peak RSS (MB) of ``vlmkit run`` at ``scheme`` on llama.cpp."""
    rows = ((results.get("inspect") or {}).get("memory") or {}).get("run") or []
    return next((r["bytes"] / 2**20 for r in rows if r["scheme"] == scheme), None)


def print_table(results: dict, header: str) -> None:
    print(f"\n{header}")
    cp = (results.get("cp") or {}).get("seconds")
    print(f"{'step':<38} {'seconds':>8} {'peak RSS MB':>12} {'ratio':>22}  details")
    for name, r in results.items():
        if name in ("inspect",) or not isinstance(r, dict) or "seconds" not in r:
            continue
        ratio = ""
        if name.startswith("convert") and cp:
            ratio = f"{r['seconds'] / cp:.2f} x cp"
        need = (r.get("reference") or {}).get("need_bytes") if isinstance(r.get("reference"), dict) else None
        if need:   # the check's own plan (vlmkit.eval.reference) against what it took
            ratio += f", planned {need / 2**20:.0f} MB ({need / 2**20 / r['rss_mb'] - 1:+.0%})"
        if name.startswith("run "):
            label, lang = name[len("run "):].rsplit(" ", 1)
            dtype, _, variant = label.partition("/")
            ref = results.get(f"run {dtype} {lang}" if variant else f"llama-mtmd-cli {label} {lang}")
            if ref:
                ratio = f"{r['seconds'] / ref['seconds']:.2f} x {'default' if variant else 'llama-mtmd-cli'}"
            if r.get("gguf_bytes"):
                ratio += f", RSS {r['rss_mb'] * 2**20 / r['gguf_bytes']:.2f} x GGUF"
            predicted = prediction(results, dtype) if not variant else None
            if predicted:
                ratio += f", inspect predicted {predicted:.0f} MB ({predicted / r['rss_mb'] - 1:+.0%})"
        details = {k: v for k, v in r.items() if k not in ("seconds", "rss_mb", "stderr", "memory")}
        print(f"{name:<38} {r['seconds']:>8.1f} {r['rss_mb']:>12.0f} {ratio:>22}  {json.dumps(details, ensure_ascii=False)}")
    inspect = results.get("inspect")
    if inspect:
        print(f"inspect --memory: {inspect['seconds']:.2f} s, {inspect['rss_mb']:.0f} MB peak RSS; params "
              f"{inspect.get('params')}")
    ours = results.get("transformers bf16 en")
    for name in ("run q4_k_m en", "run q8_0 en"):
        if ours and name in results:
            print(f"{name}: {ours['seconds'] / results[name]['seconds']:.1f} x faster than transformers bf16 "
                  f"({ours['extrapolated']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/vlmkit-seed-scale"))
    parser.add_argument("--small", action="store_true", help="2 LM blocks (1.37 B): the whole bench in minutes")
    parser.add_argument("--lm-layers", type=int, help="LM decoder blocks (default 32; --small: 2)")
    parser.add_argument("--vision-layers", type=int, default=27)
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--run-threads", type=int, help="--threads for vlmkit run (default: its own default)")
    parser.add_argument("--transformers-tokens", type=int, default=3, help="decode tokens before extrapolating")
    parser.add_argument("--dtypes", default="q4_k_m,q8_0", help="quantized types for convert / run steps")
    parser.add_argument("--keep", action="store_true",
                        help="keep the quantized conversions for a later run (which reuses them)")
    parser.add_argument("--clean", action="store_true", help="remove the cached replica at the end too")
    args = parser.parse_args()
    steps = set(args.steps.split(","))
    shape = Shape(args.lm_layers or (2 if args.small else 32), args.vision_layers)
    args.workdir.mkdir(parents=True, exist_ok=True)
    config = model_config(shape)
    plan = tensor_plan(config)
    n_params = sum(int(np.prod(s)) for _, s in plan)
    source = n_params * 2
    need = disk_need(source, plan) - (source if (args.workdir / shape.key).is_dir() else 0)
    free = shutil.disk_usage(args.workdir).free
    print(f"replica {shape.key}: {n_params:,} parameters, {source / 1e9:.1f} GB bf16; this run needs "
          f"{need / 1e9:.1f} GB more disk under {args.workdir} ({free / 1e9:.1f} GB free)", flush=True)
    if need > free:
        sys.exit(f"error: {args.workdir}: not enough disk ({need / 1e9:.1f} GB needed, {free / 1e9:.1f} GB free)")
    model = build(args.workdir, shape)
    image = photo(args.workdir)
    work = args.workdir / f"outputs-{shape.key}"   # per shape: two runs may share the workdir
    results_file = args.workdir / f"results-{shape.key}.json"
    # a bench split into parts (--steps, --keep) adds to the results of the earlier parts
    results: dict[str, Any] = json.loads(results_file.read_text()) if results_file.is_file() else {}
    results.update({"replica": shape.key, "params": n_params})

    def save() -> None:
        results_file.write_text(json.dumps(results, indent=2, ensure_ascii=False))

    try:
        subprocess.run(f"cat {model}/*.safetensors > /dev/null", shell=True, check=True)  # one page-cache state
        if "inspect" in steps:
            step_inspect(model, results)
            save()
        if "convert" in steps:
            shutil.rmtree(step_convert(model, work, "f16", results))
            step_cp(model, work, results)
            save()
        for dtype in args.dtypes.split(","):
            if not steps & {"convert", "run", "mtmd-cli", "defaults"}:
                break
            out = step_convert(model, work, dtype, results, reuse=args.keep)
            save()
            if "run" in steps:
                step_run(out, image, dtype, results, args.run_threads)
                save()
            if "mtmd-cli" in steps:
                step_mtmd_cli(out, image, dtype, results, args.threads)
                save()
            if "defaults" in steps and dtype == "q4_k_m":
                for variant, env in VARIANTS.items():
                    step_run(out, image, f"{dtype}/{variant}", results, None, ("en",), env)
                    save()
            if not args.keep:
                shutil.rmtree(out)
        if "verify" in steps:
            shutil.rmtree(step_convert(model, work, "f16", results, verify=True), ignore_errors=True)
            save()
        if "transformers" in steps:
            step_transformers(model, image, results, args.threads, args.transformers_tokens)
            save()
    finally:
        for leftover in (work.iterdir() if work.is_dir() else ()):
            if not (args.keep and converted(leftover)):
                shutil.rmtree(leftover, ignore_errors=True)
        save()
        if args.clean:
            shutil.rmtree(model, ignore_errors=True)
    print_table(results, f"{shape.key}: {n_params:,} parameters, {os.cpu_count()} CPUs; results in {results_file}")


if __name__ == "__main__":
    main()
