"""Importance matrices in llama.cpp's formats: what ``llama-imatrix`` writes and ``llama-quantize --imatrix`` reads.

An entry per weight (by its GGUF tensor name) holds ``Σ x²`` of each input column over the calibration tokens
and the token count; llama.cpp's quantizer weighs each column's rounding error by ``Σ x² / count`` (the
diagonal of the Hessian GPTQ uses). ``vlmkit quantize`` fills them from its own image+text calibration run,
which llama.cpp's imatrix tool cannot do (it only runs text).

Written here because gguf-py has no imatrix reader or writer; the formats follow llama.cpp's
``tools/imatrix/imatrix.cpp`` (``save_imatrix``) and ``common/imatrix-loader.cpp``:

- GGUF (current): ``general.type = "imatrix"``, ``imatrix.datasets`` / ``chunk_count`` / ``chunk_size``, and per
  weight two F32 tensors ``<name>.in_sum2`` (``[n_mat, n_cols]``) and ``<name>.counts`` (``[n_mat, 1]``);
- legacy ``.dat``: ``int32 n``; per entry ``int32 len, name, int32 ncall, int32 nval, float[nval]`` (the values
  already divided by the token count and multiplied by ``ncall``); optional ``int32 chunks, int32 len, dataset``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vlmkit.errors import CheckpointError

IN_SUM2, COUNTS = ".in_sum2", ".counts"


@dataclass
class Importance:
    sq_sum: np.ndarray      # Σ x² per input column, float32 [n_cols]
    count: int              # tokens behind it

    @property
    def values(self) -> np.ndarray:
        """What llama.cpp's quantizer receives: the mean of x² per column (``Σ x² / count``)."""
        if self.count <= 0:
            return np.ones_like(self.sq_sum)  # llama.cpp's rule for an entry that saw no tokens
        return (self.sq_sum / np.float32(self.count)).astype(np.float32)


def write_imatrix(path: Path, entries: dict[str, Importance], dataset: str, chunk_count: int,
                  chunk_size: int) -> None:
    """llama.cpp's GGUF imatrix file (``chunk_count`` / ``chunk_size``: calibration samples, mean tokens each)."""
    import gguf

    writer = gguf.GGUFWriter(path, arch="imatrix")  # llama.cpp ignores general.architecture here
    writer.add_type("imatrix")
    writer.add_array("imatrix.datasets", [dataset])
    writer.add_uint32("imatrix.chunk_count", chunk_count)
    writer.add_uint32("imatrix.chunk_size", chunk_size)
    for name, entry in sorted(entries.items()):
        writer.add_tensor(name + IN_SUM2, entry.sq_sum.astype(np.float32).reshape(1, -1))
        writer.add_tensor(name + COUNTS, np.array([[entry.count]], dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@dataclass
class ImatrixFile:
    values: dict[str, np.ndarray]   # GGUF tensor name -> per-column importance, as llama-quantize computes it
    datasets: list[str]
    chunk_count: int

    def metadata(self, path: Path) -> dict[str, str | int]:
        """The ``quantize.imatrix.*`` keys llama-quantize records in its output."""
        keys: dict[str, str | int] = {"quantize.imatrix.file": str(path)}
        if self.datasets:
            keys["quantize.imatrix.dataset"] = self.datasets[0]
        keys["quantize.imatrix.entries_count"] = len(self.values)
        if self.chunk_count > 0:
            keys["quantize.imatrix.chunks_count"] = self.chunk_count
        return keys


def read_imatrix(path: Path) -> ImatrixFile:
    """Either format, with llama-quantize's normalisation (``Σ x² / count``)."""
    path = Path(path)
    try:
        head = path.read_bytes()[:4]
    except OSError as error:
        raise CheckpointError(path, f"cannot read the importance matrix ({error.strerror})") from None
    try:
        return _read_gguf(path) if head == b"GGUF" else _read_legacy(path)
    except (ValueError, struct.error, IndexError, KeyError) as error:
        raise CheckpointError(path, f"not a llama.cpp importance matrix (GGUF or legacy .dat): {error}") from None


def _read_gguf(path: Path) -> ImatrixFile:
    import gguf

    reader = gguf.GGUFReader(path)
    fields = {key: reader.get_field(key) for key in ("imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size")}
    for key, value in fields.items():
        if value is None:  # llama-quantize refuses such a file too
            raise ValueError(f"missing {key}")
    tensors = {t.name: np.asarray(t.data, dtype=np.float32) for t in reader.tensors}
    out = {}
    for name, sums in tensors.items():
        if not name.endswith(IN_SUM2):
            continue
        base = name.removesuffix(IN_SUM2)
        counts = tensors.get(base + COUNTS)
        if counts is None:
            raise ValueError(f"{base}: sums without counts")
        sums = sums.reshape(counts.size, -1)
        counts = counts.reshape(-1, 1)
        values = np.where(counts > 0, sums / np.where(counts > 0, counts, 1), 1.0)
        out[base] = values.reshape(-1).astype(np.float32)
    if not out:
        raise ValueError("no entries")
    datasets = fields["imatrix.datasets"].contents()
    return ImatrixFile(out, list(datasets), int(fields["imatrix.chunk_count"].contents()))


def _read_legacy(path: Path) -> ImatrixFile:
    data = path.read_bytes()
    (n_entries,), offset = struct.unpack_from("<i", data), 4
    if n_entries < 1:
        raise ValueError("no entries")
    out = {}
    for _ in range(n_entries):
        (length,) = struct.unpack_from("<i", data, offset)
        name = data[offset + 4: offset + 4 + length].decode()
        offset += 4 + length
        ncall, nval = struct.unpack_from("<ii", data, offset)
        offset += 8
        if nval < 1:
            raise ValueError(f"{name}: no values")
        sums = np.frombuffer(data, dtype="<f4", count=nval, offset=offset).astype(np.float32)
        offset += 4 * nval
        out[name] = sums / np.float32(ncall) if ncall > 0 else sums
    chunks, datasets = 0, []
    if offset + 4 <= len(data):  # optional trailer: chunk count, dataset name
        (chunks,) = struct.unpack_from("<i", data, offset)
        if offset + 8 <= len(data):
            (length,) = struct.unpack_from("<i", data, offset + 4)
            if length > 0:
                datasets = [data[offset + 8: offset + 8 + length].decode(errors="replace")]
    return ImatrixFile(out, datasets, chunks)
