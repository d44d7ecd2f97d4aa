"""The bad-input corpus: checkpoints that are malformed or hostile, each with the fault it must be refused for.

Every case builds a complete-looking Hugging Face model directory (or a GGUF file) whose only problem is
its fault, so a verb that refuses it refuses it for that reason. Cases that carry a payload (a pickle
that would run a command, an ``auto_map`` module, a chat template reaching for Python internals) would
create a file named ``ran-*`` next to the checkpoint if any of it ever ran.

A verb joins the corpus with one entry in ``VERBS`` of tests/test_hostile.py (its command line, given
MODEL and an output location); ``refused_by`` lists the verbs that must refuse a case (the others must
still run nothing and write nothing).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import torch
from safetensors.torch import save_file

ALL_VERBS = frozenset({"inspect", "convert", "run", "diff", "eval", "serve", "quantize"})
CONFIG = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 16, "intermediate_size": 32,
          "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": 8,
          "max_position_embeddings": 32}


@dataclass(frozen=True)
class HostileCase:
    id: str
    build: Callable[[Path], Path]     # writes the case under a fresh directory; returns the MODEL argument
    fault: str                        # phrase the one-line error must contain
    file: str                         # name of the file the error must name
    refused_by: frozenset[str] = ALL_VERBS


def model_dir(root: Path, config: dict | None = None, config_text: str | None = None) -> Path:
    folder = root / "model"
    folder.mkdir()
    (folder / "config.json").write_text(config_text if config_text is not None else json.dumps(config or CONFIG))
    return folder


def safetensors_bytes(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + data


def f32(shape: list[int], begin: int, end: int) -> dict:
    return {"dtype": "F32", "shape": shape, "data_offsets": [begin, end]}


def raw_safetensors(header: dict, data: bytes) -> Callable[[Path], Path]:
    def build(root: Path) -> Path:
        folder = model_dir(root)
        (folder / "model.safetensors").write_bytes(safetensors_bytes(header, data))
        return folder
    return build


def truncated(root: Path) -> Path:
    folder = model_dir(root)
    path = folder / "model.safetensors"
    save_file({"a": torch.ones(16), "b": torch.ones(64)}, str(path))
    path.write_bytes(path.read_bytes()[:-100])
    return folder


def sharded(weight_map: Callable[[Path], dict[str, str]]) -> Callable[[Path], Path]:
    def build(root: Path) -> Path:
        folder = model_dir(root)
        save_file({"a": torch.ones(2)}, str(folder / "model-00001-of-00002.safetensors"))
        save_file({"b": torch.ones(3)}, str(folder / "model-00002-of-00002.safetensors"))
        save_file({"b": torch.ones(3)}, str(root / "outside.safetensors"))
        (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map(root)}))
        return folder
    return build


def valid_weights(folder: Path) -> None:
    save_file({"model.embed_tokens.weight": torch.ones(8, 16)}, str(folder / "model.safetensors"))


class _RunsCommand:
    """Unpickled by plain pickle, this would create ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def pickle_with_code(root: Path) -> Path:
    folder = model_dir(root)
    torch.save({"w": torch.ones(2), "evil": _RunsCommand(root / "ran-pickle")}, folder / "pytorch_model.bin")
    return folder


def npz_object_array(root: Path) -> Path:
    folder = model_dir(root)
    np.savez(folder / "params.npz", **{"params/ok": np.ones(2, np.float32),
                                       "params/obj": np.array([{"a": 1}], dtype=object)})
    return folder


def write_gguf(path: Path, extra: Callable[[gguf.GGUFWriter], None] | None = None) -> Path:
    """A small valid GGUF: a vocabulary and an embedding (``extra`` adds keys and tensors)."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_token_list([f"tok{i}" for i in range(16)])
    writer.add_tensor("token_embd.weight", np.arange(16 * 32, dtype=np.float32).reshape(16, 32))
    if extra is not None:
        extra(writer)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def gguf_file(root: Path) -> Path:
    return write_gguf(root / "model.gguf")


def gguf_truncated(root: Path) -> Path:
    path = gguf_file(root)
    path.write_bytes(path.read_bytes()[:300])
    return path


def gguf_huge_array(root: Path) -> Path:
    path = gguf_file(root)
    data = bytearray(path.read_bytes())
    key = b"tokenizer.ggml.tokens"
    at = data.index(key) + len(key) + 8          # after the value type and the item type
    data[at:at + 8] = (2**62).to_bytes(8, "little")
    path.write_bytes(bytes(data))
    return path


def config_not_json(root: Path) -> Path:
    folder = model_dir(root, config_text='{"model_type": "llama", ')
    valid_weights(folder)
    return folder


# Reaches os through a global's __init__.__globals__ (the classic template-injection path): it would
# create ran-template if Jinja's sandbox let it through.
ESCAPING_TEMPLATE = ("{{ cycler.__init__.__globals__.os.popen('touch MARKER').read() }}"
                     "{% for m in messages %}{{ m['content'] }}{% endfor %}")


def chat_template_escape(root: Path) -> Path:
    folder = model_dir(root)
    valid_weights(folder)
    template = ESCAPING_TEMPLATE.replace("MARKER", str(root / "ran-template"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    return folder


def auto_map_custom_code(root: Path) -> Path:
    config = {"model_type": "evil_custom", "architectures": ["EvilForCausalLM"],
              "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilForCausalLM"}}
    folder = model_dir(root, config)
    valid_weights(folder)
    (folder / "evil.py").write_text(f"open({str(root / 'ran-auto-map')!r}, 'w').close()\n")
    return folder


CASES: list[HostileCase] = [
    HostileCase("truncated", truncated, "runs past end of file", "model.safetensors"),
    HostileCase("overlapping", raw_safetensors({"a": f32([16], 0, 64), "b": f32([16], 32, 96)}, b"\0" * 96),
                "tensor 'b' data [32, 96) overlaps tensor 'a' [0, 64)", "model.safetensors"),
    HostileCase("gapped", raw_safetensors({"a": f32([16], 0, 64), "b": f32([16], 80, 144)}, b"\0" * 144),
                "gap of 16 unused bytes", "model.safetensors"),
    HostileCase("lying-shape", raw_safetensors({"a": f32([2, 3], 0, 20)}, b"\0" * 20),
                "F32 [2, 3] needs 24 bytes", "model.safetensors"),
    HostileCase("index-traversal", sharded(lambda root: {"a": "model-00001-of-00002.safetensors",
                                                         "b": "../outside.safetensors"}),
                "points outside the model directory", "model.safetensors.index.json"),
    HostileCase("index-absolute", sharded(lambda root: {"a": "model-00001-of-00002.safetensors",
                                                        "b": str(root / "outside.safetensors")}),
                "is an absolute path", "model.safetensors.index.json"),
    HostileCase("index-missing-key", sharded(lambda root: {"a": "model-00001-of-00002.safetensors",
                                                           "c": "model-00002-of-00002.safetensors"}),
                "which has no tensor 'c'", "model.safetensors.index.json"),
    HostileCase("pickle-with-code", pickle_with_code, "refused without running it", "pytorch_model.bin"),
    HostileCase("npz-object-array", npz_object_array, "is an object array", "params.npz"),
    HostileCase("gguf-truncated", gguf_truncated, "truncated", "model.gguf"),
    HostileCase("gguf-huge-array", gguf_huge_array, "array length 4611686018427387904 cannot fit", "model.gguf"),
    HostileCase("config-not-json", config_not_json, "not valid JSON", "config.json"),
    HostileCase("chat-template-escape", chat_template_escape, "refused by the sandbox", "tokenizer_config.json",
                refused_by=frozenset({"convert", "run", "eval", "serve", "quantize"})),
    HostileCase("auto-map-custom-code", auto_map_custom_code, "'evil_custom'", "model",
                refused_by=frozenset({"convert", "run", "eval", "serve", "quantize"})),
]
