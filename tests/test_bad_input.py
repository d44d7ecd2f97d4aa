"""Every malformed input gives one ``CheckpointError`` line that names the file and the fault.

The bad files are built by hand, byte by byte where the fault is in the layout.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from hostile import write_gguf
from vlmkit.errors import CheckpointError
from vlmkit.readers import open_checkpoint


def expect_error(path: Path, phrase: str, names: Path | None = None) -> str:
    """Open ``path``; the error must be one line containing the faulty file's name and ``phrase``."""
    with pytest.raises(CheckpointError) as caught:
        open_checkpoint(path)
    message = str(caught.value)
    assert "\n" not in message, message
    assert (names or path).name in message, message
    assert phrase in message, message
    return message


def write_safetensors(path: Path, header: dict, data: bytes, length: int | None = None) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes((len(raw) if length is None else length).to_bytes(8, "little") + raw + data)
    return path


def f32(shape: list[int], begin: int, end: int) -> dict:
    return {"dtype": "F32", "shape": shape, "data_offsets": [begin, end]}


# --- safetensors ------------------------------------------------------------------------------

def test_truncated_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_file({"a": torch.ones(16), "b": torch.ones(64)}, str(path))
    path.write_bytes(path.read_bytes()[:-100])
    expect_error(path, "tensor 'b' data [64, 320) runs past end of file")


def test_file_shorter_than_length_prefix(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x10\x00\x00")
    expect_error(path, "file truncated: 3 bytes")


def test_header_length_past_eof(tmp_path: Path) -> None:
    path = write_safetensors(tmp_path / "model.safetensors", {"a": f32([1], 0, 4)}, b"\0" * 4, length=5000)
    expect_error(path, "header length 5000 bytes runs past end of file")


def test_header_over_100_mb(tmp_path: Path) -> None:
    path = write_safetensors(tmp_path / "model.safetensors", {}, b"", length=100_000_001)
    expect_error(path, "exceeds the 100 MB limit")


def test_offsets_overlap(tmp_path: Path) -> None:
    header = {"a": f32([16], 0, 64), "b": f32([16], 32, 96)}
    path = write_safetensors(tmp_path / "model.safetensors", header, b"\0" * 96)
    expect_error(path, "tensor 'b' data [32, 96) overlaps tensor 'a' [0, 64)")


def test_gap_between_tensors(tmp_path: Path) -> None:
    header = {"a": f32([16], 0, 64), "b": f32([16], 80, 144)}
    path = write_safetensors(tmp_path / "model.safetensors", header, b"\0" * 144)
    expect_error(path, "gap of 16 unused bytes after tensor 'a', before tensor 'b'")


def test_data_past_eof(tmp_path: Path) -> None:
    header = {"a": f32([16], 0, 64), "b": f32([16], 64, 128)}
    path = write_safetensors(tmp_path / "model.safetensors", header, b"\0" * 100)
    expect_error(path, "tensor 'b' data [64, 128) runs past end of file (the data section holds 100 bytes")


def test_trailing_bytes_not_covered(tmp_path: Path) -> None:
    path = write_safetensors(tmp_path / "model.safetensors", {"a": f32([16], 0, 64)}, b"\0" * 72)
    expect_error(path, "8 trailing bytes after the last tensor")


def test_size_disagrees_with_dtype_and_shape(tmp_path: Path) -> None:
    path = write_safetensors(tmp_path / "model.safetensors", {"a": f32([2, 3], 0, 20)}, b"\0" * 20)
    expect_error(path, "tensor 'a': F32 [2, 3] needs 24 bytes but data_offsets [0, 20) hold 20")


def test_unknown_dtype(tmp_path: Path) -> None:
    header = {"a": {"dtype": "F31", "shape": [1], "data_offsets": [0, 4]}}
    path = write_safetensors(tmp_path / "model.safetensors", header, b"\0" * 4)
    expect_error(path, "tensor 'a': unknown dtype 'F31'")


def test_header_not_json(tmp_path: Path) -> None:
    raw = b'{"a": {"dtype": "F32",'
    path = tmp_path / "model.safetensors"
    path.write_bytes(len(raw).to_bytes(8, "little") + raw)
    expect_error(path, "header is not valid JSON")


# --- sharded index ----------------------------------------------------------------------------

def sharded(tmp_path: Path, weight_map: dict[str, str]) -> Path:
    model = tmp_path / "model"
    model.mkdir()
    save_file({"a": torch.ones(2)}, str(model / "model-00001-of-00002.safetensors"))
    save_file({"b": torch.ones(3)}, str(model / "model-00002-of-00002.safetensors"))
    index = model / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": weight_map}))
    return index


def test_index_points_outside_with_dotdot(tmp_path: Path) -> None:
    save_file({"b": torch.ones(3)}, str(tmp_path / "outside.safetensors"))
    index = sharded(tmp_path, {"a": "model-00001-of-00002.safetensors", "b": "../outside.safetensors"})
    expect_error(index.parent, "weight_map['b'] points outside the model directory: '../outside.safetensors'",
                 names=index)


def test_index_absolute_path(tmp_path: Path) -> None:
    save_file({"b": torch.ones(3)}, str(tmp_path / "outside.safetensors"))
    absolute = str(tmp_path / "outside.safetensors")
    index = sharded(tmp_path, {"a": "model-00001-of-00002.safetensors", "b": absolute})
    expect_error(index.parent, f"weight_map['b'] is an absolute path '{absolute}'", names=index)


def test_index_missing_shard(tmp_path: Path) -> None:
    index = sharded(tmp_path, {"a": "model-00001-of-00002.safetensors", "b": "model-00003-of-00003.safetensors"})
    expect_error(index, "weight_map['b'] names a missing shard 'model-00003-of-00003.safetensors'")


def test_index_key_absent_from_shard(tmp_path: Path) -> None:
    index = sharded(tmp_path, {"a": "model-00001-of-00002.safetensors", "c": "model-00002-of-00002.safetensors"})
    expect_error(index, "weight_map['c'] points to shard 'model-00002-of-00002.safetensors', which has no tensor 'c'")


def test_bin_index_key_absent_from_shard(tmp_path: Path) -> None:
    torch.save({"a": torch.ones(2)}, tmp_path / "pytorch_model-00001-of-00001.bin")
    index = tmp_path / "pytorch_model.bin.index.json"
    index.write_text(json.dumps({"weight_map": {"a": "pytorch_model-00001-of-00001.bin",
                                                "z": "pytorch_model-00001-of-00001.bin"}}))
    expect_error(tmp_path, "which has no tensor 'z'", names=index)


# --- torch pickles ----------------------------------------------------------------------------

class RunsCommand:
    """Unpickling this with plain pickle would run a shell command that creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class CustomObject:
    def __init__(self) -> None:
        self.value = 3


def test_pickle_with_code_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    path = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.ones(2), "evil": RunsCommand(marker)}, path)
    expect_error(path, f"unsupported global {os.system.__module__}.system")
    assert not marker.exists()


def test_pickle_with_custom_class(tmp_path: Path) -> None:
    path = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.ones(2), "extra": CustomObject()}, path)
    expect_error(path, f"unsupported global {CustomObject.__module__}.CustomObject")


def test_pickle_with_plain_non_tensor_value(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    torch.save({"w": torch.ones(2), "epoch": 3}, path)
    expect_error(path, "pickle entry 'epoch' is a int, not a tensor")


def test_legacy_non_zip_torch_format(tmp_path: Path) -> None:
    path = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.ones(2)}, path, _use_new_zipfile_serialization=False)
    expect_error(path, "legacy (pre-1.6, non-zip) torch.save format")


def test_truncated_torch_zip(tmp_path: Path) -> None:
    path = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.ones(256)}, path)
    path.write_bytes(path.read_bytes()[:300])
    expect_error(path, "zip archive is truncated or corrupt")


# --- npz --------------------------------------------------------------------------------------

def test_npz_object_array(tmp_path: Path) -> None:
    path = tmp_path / "params.npz"
    np.savez(path, **{"params/ok": np.ones(2, np.float32), "params/obj": np.array([{"a": 1}], dtype=object)})
    expect_error(path, "array 'params/obj' is an object array")


def test_truncated_npz(tmp_path: Path) -> None:
    path = tmp_path / "params.npz"
    np.savez(path, w=np.ones(1000, np.float32))
    path.write_bytes(path.read_bytes()[:2000])
    expect_error(path, "not a readable .npz (zip) archive, truncated or corrupt")


# --- GGUF -------------------------------------------------------------------------------------

def test_gguf_bad_magic(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "model.gguf")
    path.write_bytes(b"GGUX" + path.read_bytes()[4:])
    expect_error(path, "bad magic b'GGUX'")


@pytest.mark.parametrize("keep", [300, -1000], ids=["in-metadata", "in-tensor-data"])
def test_gguf_truncated(tmp_path: Path, keep: int) -> None:
    path = write_gguf(tmp_path / "model.gguf")
    path.write_bytes(path.read_bytes()[:keep])
    expect_error(path, "truncated")


# --- paths (the CLI's handling of all of these: tests/test_hostile.py) ------------------------------------------------------------------------

def test_missing_path(tmp_path: Path) -> None:
    expect_error(tmp_path / "nowhere.safetensors", "no such file or directory")


def test_unknown_file_type(tmp_path: Path) -> None:
    path = tmp_path / "weights.h5"
    path.write_bytes(b"\x89HDF")
    expect_error(path, "unknown checkpoint format")
