"""``gguf_layout.read_values``: a few KV values out of a GGUF without gguf-py building every array field (the
65k-token vocabulary of a 7 B model costs GGUFReader ~2 s a file, paid on each ``vlmkit run``)."""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest

from vlmkit.errors import CheckpointError
from vlmkit.readers.gguf_layout import read_values

KEYS = ("general.name", "llama.block_count", "llama.rope.freq_base", "x.flag", "x.signed", "x.count64")


def _gguf(path: Path, build) -> Path:
    writer = gguf.GGUFWriter(path, "llama")
    build(writer)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _write(path: Path) -> Path:
    return _gguf(path, _keys)


def _keys(writer: gguf.GGUFWriter) -> None:
    writer.add_name("réplica")
    writer.add_array("tokenizer.ggml.tokens", [f"tok{i}" for i in range(5000)])
    writer.add_array("tokenizer.ggml.scores", [float(i) for i in range(5000)])
    writer.add_uint32("llama.block_count", 32)
    writer.add_float32("llama.rope.freq_base", 500000.0)
    writer.add_bool("x.flag", True)
    writer.add_int32("x.signed", -7)
    writer.add_uint64("x.count64", 1 << 40)
    writer.add_string("x.after", "last")


def test_values_equal_gguf_pys(tmp_path):
    path = _write(tmp_path / "m.gguf")
    reader = gguf.GGUFReader(path)
    expected = {key: reader.get_field(key).contents() for key in KEYS}
    got = read_values(path, (*KEYS, "x.after", "not.there", "tokenizer.ggml.tokens"))
    assert {key: got[key] for key in KEYS} == expected
    assert got["x.after"] == "last"                       # read past both 5000-element arrays
    assert "not.there" not in got and "tokenizer.ggml.tokens" not in got   # arrays are not decoded


def test_truncated_file_is_one_line_error(tmp_path):
    data = _write(tmp_path / "m.gguf").read_bytes()
    for keep in (3, 20, 40, len(data) // 2, data.rindex(b"last") + 2):
        cut = tmp_path / f"cut{keep}.gguf"
        cut.write_bytes(data[:keep] + b"\0" * (3 if keep < 4 else 0))
        with pytest.raises(CheckpointError) as error:
            read_values(cut, ("x.after",))
        assert "\n" not in str(error.value)


def _with_tensor(path: Path) -> Path:
    import numpy as np

    def build(writer: gguf.GGUFWriter) -> None:
        writer.add_string("tokenizer.chat_template", "{{ messages[0]['content'] }}")
        writer.add_array("tokenizer.ggml.tokens", [f"tok{i}" for i in range(16)])
        writer.add_tensor("token_embd.weight", np.ones((16, 32), np.float32))
        q8 = gguf.quants.quantize(np.ones((2, 64), np.float32), gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor("q.weight", q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)

    return _gguf(path, build)


def test_check_gguf_finds_every_tensor_inside_the_file(tmp_path):
    """What ``vlmkit run`` checks before llama.cpp reads a GGUF: gguf-py's reader on the same file agrees."""
    from vlmkit.readers.gguf_reader import check_gguf

    path = _with_tensor(tmp_path / "m.gguf")
    reader = gguf.GGUFReader(path)
    assert check_gguf(path, ("tokenizer.chat_template",)) == {
        "tokenizer.chat_template": reader.get_field("tokenizer.chat_template").contents()}
    data = path.read_bytes()
    for cut in (len(data) - 40, len(data) - 100):   # into the last tensor (136 bytes + < 32 of padding)
        (tmp_path / "cut.gguf").write_bytes(data[:cut])
        with pytest.raises(Exception):
            gguf.GGUFReader(tmp_path / "cut.gguf")
        with pytest.raises(CheckpointError, match="runs past the end of the file"):
            check_gguf(tmp_path / "cut.gguf")
    bad_type = bytearray(data)
    at = bad_type.index(b"q.weight") + len(b"q.weight") + 4 + 2 * 8   # name, n_dims, two dims
    bad_type[at:at + 4] = (99).to_bytes(4, "little")
    (tmp_path / "type.gguf").write_bytes(bytes(bad_type))
    with pytest.raises(CheckpointError, match="unknown type 99"):
        check_gguf(tmp_path / "type.gguf")
