"""Property-based fuzzing of every reader (hypothesis): truncations, byte flips and header edits of a
valid safetensors file, sharded index, GGUF, big_vision .npz and torch .bin never raise anything but
vlmkit's own error, never hang, and never allocate more than the file's size justifies.

CI-sized: derandomized (the same examples every run) and a bounded number of them per format.
"""

from __future__ import annotations

import json
import signal
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

import hostile
from vlmkit.errors import VlmkitError
from vlmkit.readers import open_checkpoint

EXAMPLES = 150
HANG_SECONDS = 30           # a guard against endless loops, not a speed assertion
ALLOWANCE = 16 << 20        # parsers' fixed overhead (JSON, zip directory, numpy views)
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def write_safetensors(folder: Path) -> Path:
    save_file({"a": torch.arange(24, dtype=torch.float32).reshape(4, 6), "b": torch.ones(8, dtype=torch.bfloat16),
               "c": torch.zeros(3, dtype=torch.int64)}, str(folder / "model.safetensors"))
    return folder / "model.safetensors"


def write_index(folder: Path) -> Path:
    save_file({"a": torch.ones(2, 3)}, str(folder / "model-00001-of-00002.safetensors"))
    save_file({"b": torch.ones(5)}, str(folder / "model-00002-of-00002.safetensors"))
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 44}, "weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    return index


def write_gguf(folder: Path) -> Path:
    def extra(writer: gguf.GGUFWriter) -> None:
        writer.add_array("x.ints", [1, 2, 3])
        writer.add_uint32("llama.block_count", 1)
        q8 = gguf.quants.quantize(np.ones((2, 32), np.float32), gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor("q.weight", q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)

    return hostile.write_gguf(folder / "model.gguf", extra)


def write_npz(folder: Path) -> Path:
    path = folder / "params.npz"
    np.savez(path, **{"params/img/w": np.ones((3, 4), np.float32), "params/llm/b": np.arange(5, dtype=np.int32)})
    return path


def write_bin(folder: Path) -> Path:
    path = folder / "pytorch_model.bin"
    torch.save({"w": torch.ones(3, 4), "b": torch.arange(5)}, path)
    return path


WRITERS: dict[str, Callable[[Path], Path]] = {
    "safetensors": write_safetensors, "index": write_index, "gguf": write_gguf, "npz": write_npz, "bin": write_bin,
}

# A mutation: ("truncate", keep) | ("flip", [(position, xor)]) | ("header", [(position, byte)]) near the start.
mutations = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1, exclude_max=True)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)),
                                        min_size=1, max_size=8)),
    st.tuples(st.just("header"), st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)),
                                          min_size=1, max_size=4)),
)


def mutate(data: bytes, mutation: tuple) -> bytes:
    kind, arg = mutation
    if kind == "truncate":
        return data[: int(arg * len(data))]
    out = bytearray(data)
    for where, value in arg:
        position = int(where * len(out)) if kind == "flip" else where % max(len(out), 1)
        out[position] = out[position] ^ value if kind == "flip" else value
    return bytes(out)


class Hang(Exception):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise Hang(f"a reader ran for more than {HANG_SECONDS} s")


def read_everything(path: Path) -> None:
    """Open and read every tensor: only VlmkitError may come out."""
    try:
        with open_checkpoint(path) as checkpoint:
            for name in checkpoint.names():
                checkpoint.read(name)
    except VlmkitError as error:
        assert "\n" not in str(error), str(error)


@pytest.mark.parametrize("fmt", list(WRITERS))
def test_mutated_files_raise_only_vlmkit_errors(tmp_path: Path, fmt: str) -> None:
    target = WRITERS[fmt](tmp_path)
    original = target.read_bytes()

    @FUZZ
    @given(mutation=mutations)
    def check(mutation: tuple) -> None:
        data = mutate(original, mutation)
        target.write_bytes(data)
        previous = signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(HANG_SECONDS)
        tracemalloc.start()
        try:
            read_everything(tmp_path if fmt == "index" else target)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
        assert peak <= ALLOWANCE + 64 * max(len(data), len(original)), f"{peak} bytes for a {len(data)}-byte file"

    check()


weight_map_values = st.one_of(st.sampled_from(["model-00001-of-00002.safetensors", "../outside.safetensors",
                                               "/etc/passwd", "..", ".", "", "C:\\\\x.safetensors",
                                               "model-00009-of-00009.safetensors"]),
                              st.integers(), st.none(), st.lists(st.text(max_size=3), max_size=2))


@FUZZ
@given(weight_map=st.dictionaries(st.sampled_from(["a", "b", "c", ""]), weight_map_values, max_size=4),
       metadata=st.one_of(st.none(), st.integers(), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)))
def test_index_edits_raise_only_vlmkit_errors(tmp_path_factory: pytest.TempPathFactory, weight_map: dict,
                                              metadata: object) -> None:
    folder = tmp_path_factory.mktemp("index")
    write_index(folder)
    save_file({"b": torch.ones(5)}, str(folder.parent / "outside.safetensors"))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": metadata, "weight_map": weight_map}))
    read_everything(folder)
