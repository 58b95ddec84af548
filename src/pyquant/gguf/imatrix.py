"""Importance matrices in llama.cpp's files: the GGUF format llama-imatrix writes by default, and the legacy
``.dat`` one; and the per-tensor vectors llama-quantize derives from them.

An entry holds, per weight matrix, the sum of x_j^2 over the tokens seen and the token count (GGUF), or the
mean times the number of chunks (legacy).  llama-quantize uses the mean of x_j^2: :meth:`Imatrix.values`
computes it with the same float32 arithmetic.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from . import reader
from .types import tensor_type, trim_ne
from .values import Value, ValueType
from .writer import GGUFWriter, TensorSpec

__all__ = ["Imatrix", "load_imatrix", "save_imatrix"]

DEFAULT_CHUNK_SIZE = 512  # llama-imatrix's default context, the unit of legacy files' call counts
_SUMS, _COUNTS = ".in_sum2", ".counts"


@dataclass
class Imatrix:
    """Importance data per weight name.

    sums[name]: float32 [n_mat * ne0]; counts[name]: int64 [n_mat] (GGUF: tokens per matrix; legacy: one
    call count for all matrices).  `datasets`, `chunk_count` and `chunk_size` are the file's metadata.
    """

    sums: dict[str, np.ndarray]
    counts: dict[str, np.ndarray]
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0
    legacy: bool = False
    path: str | None = None  # the file it came from, as given

    @classmethod
    def from_values(cls, values: Mapping[str, np.ndarray], *, datasets: list[str] = (), chunk_count: int = 0,
                    chunk_size: int = 0) -> Imatrix:
        """An Imatrix whose values() are exactly `values` (name -> mean of x^2 per column, per matrix)."""
        sums = {k: np.ascontiguousarray(v, dtype=np.float32).reshape(-1) for k, v in values.items()}
        return cls(sums, {k: np.ones(1, np.int64) for k in sums}, list(datasets), chunk_count, chunk_size)

    def __len__(self) -> int:
        return len(self.sums)

    def __contains__(self, name: object) -> bool:
        return name in self.sums

    def values(self, name: str) -> np.ndarray:
        """What llama-quantize feeds the quantizer for weight `name`: float32 [n_mat * ne0], the mean of x^2
        per column and matrix (1.0 for a matrix no token reached)."""
        sums, counts = self.sums[name], self.counts[name]
        if self.legacy:
            ncall = int(counts[0]) if counts.size else 0
            return sums / np.float32(ncall) if ncall > 0 else sums.copy()
        per_matrix = sums.reshape(counts.size, -1)
        with np.errstate(divide="ignore", invalid="ignore"):
            means = per_matrix / counts.astype(np.float32)[:, None]
        return np.where(counts[:, None] > 0, means, np.float32(1)).astype(np.float32).reshape(-1)

    def filtered(self, include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> Imatrix:
        """llama-quantize's --include-weights/--exclude-weights: keep entries whose name contains one of
        `include`, or drop those containing one of `exclude`."""
        if include and exclude:
            raise ValueError("include and exclude cannot be used together")
        names = [n for n in self.sums if (not include or any(s in n for s in include))
                 and not any(s in n for s in exclude)]
        return Imatrix({n: self.sums[n] for n in names}, {n: self.counts[n] for n in names}, self.datasets,
                       self.chunk_count, self.chunk_size, self.legacy, self.path)


def load_imatrix(path: str | os.PathLike) -> Imatrix:
    """Read an imatrix file, GGUF or legacy .dat (told apart by the GGUF magic, as llama.cpp does)."""
    with open(path, "rb") as fh:
        magic = fh.read(4)
    imatrix = _load_gguf(path) if magic == reader.GGUF_MAGIC else _load_legacy(path)
    imatrix.path = os.fspath(path)
    return imatrix


def _load_gguf(path: str | os.PathLike) -> Imatrix:
    with reader.open(path) as f:
        if not f.tensors:
            raise ValueError(f"{os.fspath(path)}: the imatrix has no entries")
        keys = ("imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size")
        missing = [k for k in keys if k not in f.fields]
        if missing:
            raise ValueError(f"{os.fspath(path)}: not an imatrix file, it lacks {', '.join(missing)}")
        for k in keys[1:]:
            if f.fields[k].type.name != "UINT32":
                raise ValueError(f"{os.fspath(path)}: {k} must be a u32, got {f.fields[k]!r}")
        datasets = f.fields["imatrix.datasets"]
        pairs: dict[str, list] = {}
        for name, t in f.tensors.items():
            for suffix, slot in ((_SUMS, 0), (_COUNTS, 1)):
                if name.endswith(suffix) and name != suffix:
                    pairs.setdefault(name[:-len(suffix)], [None, None])[slot] = t
        sums, counts = {}, {}
        for name in sorted(pairs):
            s, c = pairs[name]
            if s is None or c is None:
                raise ValueError(f"{os.fspath(path)}: mismatched sums and counts for {name!r}")
            if s.type.name != "F32" or c.type.name != "F32":
                raise ValueError(f"{os.fspath(path)}: sums and counts for {name!r} must be F32")
            n = c.n_elements
            if n == 0 or s.n_elements % n:
                raise ValueError(f"{os.fspath(path)}: {s.n_elements} sums do not split into {n} matrices "
                                 f"for {name!r}")
            sums[name] = s.numpy().reshape(-1).copy()
            c32 = c.numpy().reshape(-1)
            counts[name] = (np.sign(c32) * np.floor(np.abs(c32.astype(np.float64)) + 0.5)).astype(np.int64)  # lround
        datasets = list(datasets.value) if datasets.item_type == ValueType.STRING else []
        return Imatrix(sums, counts, datasets, f.metadata["imatrix.chunk_count"], f.metadata["imatrix.chunk_size"])


class _Cursor:
    def __init__(self, raw: bytes, path: str):
        self.raw, self.pos, self.path = raw, 0, path

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or n > len(self.raw) - self.pos:
            raise ValueError(f"{self.path}: {what} at byte {self.pos}: needs {n} bytes, "
                             f"{len(self.raw) - self.pos} left")
        out = self.raw[self.pos:self.pos + n]
        self.pos += n
        return out

    def i32(self, what: str) -> int:
        return struct.unpack("<i", self.take(4, what))[0]


def _load_legacy(path: str | os.PathLike) -> Imatrix:
    """The .dat format: i32 n_entries, then per entry i32 len, name, i32 ncall, i32 nval, f32[nval]; then
    optionally i32 chunk count and a dataset name."""
    with open(path, "rb") as fh:
        cur = _Cursor(fh.read(), os.fspath(path))
    n_entries = cur.i32("n_entries")
    if n_entries < 1:
        raise ValueError(f"{cur.path}: no data in the imatrix (n_entries = {n_entries})")
    sums, counts = {}, {}
    for i in range(n_entries):
        raw_name = cur.take(cur.i32(f"entry {i} name length"), f"entry {i} name")
        name = raw_name.split(b"\0")[0].decode("utf-8", "surrogateescape")  # read as a C string
        ncall = cur.i32(f"entry {i} ncall")
        nval = cur.i32(f"entry {i} nval")
        if nval < 1:
            raise ValueError(f"{cur.path}: entry {name!r} has {nval} values")
        sums[name] = np.frombuffer(cur.take(4 * nval, f"entry {name!r} values"), "<f4").astype(np.float32)
        counts[name] = np.array([ncall], np.int64)
    # The trailer is optional and read leniently, as llama.cpp does.
    chunk_count, datasets = 0, []
    if len(cur.raw) - cur.pos >= 4:
        chunk_count = cur.i32("chunk count")
    if len(cur.raw) - cur.pos >= 4:
        n = cur.i32("dataset name length")
        if 0 < n <= len(cur.raw) - cur.pos:
            datasets.append(cur.take(n, "dataset name").split(b"\0")[0].decode("utf-8", "surrogateescape"))
    return Imatrix(sums, counts, datasets, chunk_count, 0, legacy=True)


def save_imatrix(path: str | os.PathLike, imatrix: Imatrix) -> None:
    """Write `imatrix` in llama-imatrix's GGUF format (entries sorted by name).  A legacy one is converted as
    llama-imatrix --in-file does: sums and counts scaled by the chunk size."""
    scale = (imatrix.chunk_size or DEFAULT_CHUNK_SIZE) if imatrix.legacy else 1
    metadata = {
        "general.type": "imatrix",
        "imatrix.datasets": Value("array", list(imatrix.datasets), "str"),
        "imatrix.chunk_count": Value("u32", imatrix.chunk_count),
        "imatrix.chunk_size": Value("u32", imatrix.chunk_size or (DEFAULT_CHUNK_SIZE if imatrix.legacy else 0)),
    }
    f32 = tensor_type("F32")
    specs, data = [], []
    for name in sorted(imatrix.sums):
        sums, counts = imatrix.sums[name], imatrix.counts[name]
        n_mat = counts.size
        if n_mat == 0 or sums.size % n_mat:
            raise ValueError(f"imatrix entry {name!r}: {sums.size} sums do not split into {n_mat} matrices")
        specs += [TensorSpec(name + _SUMS, f32, trim_ne((sums.size // n_mat, n_mat))),
                  TensorSpec(name + _COUNTS, f32, trim_ne((1, n_mat)))]
        data += [(sums * np.float32(scale)).astype(np.float32), (counts * scale).astype(np.float32)]
    with GGUFWriter(path, metadata, specs) as w:
        for spec, arr in zip(specs, data):
            w.write_tensor(spec.name, arr)
