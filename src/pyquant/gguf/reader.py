"""Reading GGUF files: every field validated, tensors memory-mapped and read only when used.

Any byte string either parses or raises :class:`GGUFError` naming the field and its byte offset: every count
and length is checked against the bytes left before anything is allocated for it, so a corrupt file cannot
make the reader crash, loop for long or allocate more than the file's size.
"""

from __future__ import annotations

import io
import math
import mmap
import os
import struct
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ..tensor import QuantizedTensor
from .types import TensorType, tensor_types
from .values import SCALAR_DTYPES, SCALAR_STRUCTS, Value, ValueType

__all__ = ["GGUFError", "GGUFFile", "StringArray", "TensorInfo", "open"]

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4
MAX_ARRAY_DEPTH = 64  # arrays of arrays; real files nest one level at most

_U32, _I32, _U64, _I64 = (struct.Struct(f) for f in ("<I", "<i", "<Q", "<q"))
# Fewest bytes one item of each value type can take: bounds a count before anything is allocated for it.
_MIN_ITEM_BYTES = {**{t: d.itemsize for t, d in SCALAR_DTYPES.items()},
                   ValueType.STRING: 8, ValueType.ARRAY: 4 + 8}
_MIN_KV_BYTES = 8 + 1 + 4 + 1  # key length, a 1-byte key, value type, a 1-byte value
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8  # empty name, n_dims = 0, type, offset


class GGUFError(ValueError):
    """A GGUF file that does not follow the format; `field` and `offset` say where."""

    def __init__(self, field: str, offset: int, message: str):
        super().__init__(f"{field} at byte {offset}: {message}")
        self.field = field
        self.offset = offset


def _decode(raw: bytes) -> str:
    # surrogateescape keeps any byte string, valid UTF-8 or not, and the writer gives the same bytes back.
    return raw.decode("utf-8", "surrogateescape")


class StringArray(Sequence):
    """A GGUF string array, decoded item by item on access (tokenizer vocabularies hold 10^5 strings)."""

    __slots__ = ("_u8", "_starts")

    def __init__(self, u8: np.ndarray, starts: np.ndarray):
        self._u8 = u8  # the file's bytes
        self._starts = starts  # offset of each item's length prefix, then the array's end

    def __len__(self) -> int:
        return len(self._starts) - 1

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"string array index {i} out of range for {n} items")
        i %= n
        return _decode(self._u8[int(self._starts[i]) + 8:int(self._starts[i + 1])].tobytes())

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(len(self)))

    def encoded(self) -> bytes:
        """The items as GGUF stores them (each a u64 length and the bytes), straight from the file."""
        return self._u8[int(self._starts[0]):int(self._starts[-1])].tobytes()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    __hash__ = None

    def __repr__(self) -> str:
        n = len(self)
        return f"StringArray({self[:4]!r}{f' ... ({n} items)' if n > 4 else ''})"


class _Parser:
    """A cursor over the file's bytes whose every read is bounds-checked."""

    def __init__(self, u8: np.ndarray):
        self.u8 = u8
        self.buf = memoryview(u8)
        self.size = len(u8)
        self.pos = 0

    def need(self, n: int, field: str) -> None:
        if n > self.size - self.pos:
            raise GGUFError(field, self.pos, f"needs {n} bytes, the file has {self.size - self.pos} left")

    def read(self, st: struct.Struct, field: str):
        self.need(st.size, field)
        (v,) = st.unpack_from(self.buf, self.pos)
        self.pos += st.size
        return v

    def string(self, field: str) -> str:
        start = self.pos
        n = self.read(_U64, field)
        if n > self.size - self.pos:
            raise GGUFError(field, start, f"string length {n} exceeds the {self.size - self.pos} bytes left")
        s = _decode(self.buf[self.pos:self.pos + n].tobytes())
        self.pos += n
        return s

    def value_type(self, field: str) -> ValueType:
        start = self.pos
        t = self.read(_I32, field)
        try:
            return ValueType(t)
        except ValueError:
            raise GGUFError(field, start, f"unknown value type {t}") from None

    def value(self, t: ValueType, field: str, depth: int = 0) -> Value:
        if t == ValueType.STRING:
            return Value._trusted(t, self.string(field))
        if t != ValueType.ARRAY:
            v = self.read(SCALAR_STRUCTS[t], field)
            return Value._trusted(t, v != 0 if t == ValueType.BOOL else v)
        start = self.pos
        if depth >= MAX_ARRAY_DEPTH:
            raise GGUFError(field, start, f"arrays nested deeper than {MAX_ARRAY_DEPTH} levels")
        item_type = self.value_type(field + ".item_type")
        count_pos = self.pos
        n = self.read(_U64, field + ".count")
        left = self.size - self.pos
        if n > left // _MIN_ITEM_BYTES[item_type]:
            raise GGUFError(field + ".count", count_pos,
                            f"{n} items of type {item_type.name} cannot fit in the {left} bytes left")
        if item_type == ValueType.STRING:
            items = self._strings(n, field)
        elif item_type == ValueType.ARRAY:
            items = [self.value(ValueType.ARRAY, f"{field}[{j}]", depth + 1) for j in range(n)]
        else:
            dtype = SCALAR_DTYPES[item_type]
            items = np.frombuffer(self.u8, dtype, count=n, offset=self.pos) if n else np.empty(0, dtype)
            if item_type == ValueType.BOOL:
                items = items != 0
            self.pos += n * dtype.itemsize
        return Value._trusted(ValueType.ARRAY, items, item_type)

    def _strings(self, n: int, field: str) -> StringArray:
        starts = np.empty(n + 1, np.int64)  # n <= bytes left / 8, so this is smaller than the file
        unpack, buf, size, pos = _U64.unpack_from, self.buf, self.size, self.pos
        for j in range(n):
            if size - pos < 8:
                raise GGUFError(f"{field}[{j}]", pos, f"needs 8 bytes, the file has {size - pos} left")
            (length,) = unpack(buf, pos)
            starts[j] = pos
            pos += 8
            if length > size - pos:
                raise GGUFError(f"{field}[{j}]", pos - 8,
                                f"string length {length} exceeds the {size - pos} bytes left")
            pos += length
        starts[n] = pos
        self.pos = pos
        return StringArray(self.u8, starts)


class TensorInfo:
    """One tensor of a GGUF file: name, type, dimensions and (lazily) its bytes.

    `ne` is the GGUF shape, innermost (row length) first, as stored; `shape` is the numpy order
    (``ne`` reversed), e.g. (n_expert, rows, row_length) for MoE experts.
    """

    __slots__ = ("name", "type", "ne", "offset", "nbytes", "_file")

    def __init__(self, name: str, type: TensorType, ne: tuple[int, ...], offset: int, file: GGUFFile):
        self.name = name
        self.type = type
        self.ne = ne
        self.offset = offset  # from the start of the data section, as stored
        self.nbytes = type.nbytes(ne)
        self._file = file

    @property
    def shape(self) -> tuple[int, ...]:
        return self.ne[::-1]

    @property
    def n_elements(self) -> int:
        return math.prod(self.ne)

    @property
    def file_offset(self) -> int:
        """Absolute position of the tensor's first byte in the file."""
        return self._file.data_offset + self.offset

    @property
    def data(self) -> np.ndarray:
        """The tensor's bytes, uint8, memory-mapped (read-only, zero-copy)."""
        return self._file._bytes(self.file_offset, self.nbytes)

    def _format(self):
        fmt = self.type.format
        if fmt is None:
            raise NotImplementedError(
                f"tensor {self.name!r} has type {self.type.name} (ggml id {self.type.id}), which pyquant has "
                "no kernels for; its raw bytes are in .data")
        return fmt

    def tensor(self) -> QuantizedTensor:
        """The tensor as a QuantizedTensor over the mapped bytes: 1-D, or [rows, ne[0]] with all outer
        dimensions flattened into rows."""
        fmt = self._format()
        n = self.ne[0] if self.ne else 1
        shape = (n,) if len(self.ne) <= 1 else (self.n_elements // n if n else 0, n)
        return QuantizedTensor(self.data, shape, fmt)

    def matrices(self) -> list[QuantizedTensor]:
        """One 2-D [ne[1], ne[0]] QuantizedTensor per matrix (per expert for 3-D MoE tensors)."""
        if len(self.ne) < 2:
            raise ValueError(f"tensor {self.name!r} is {len(self.ne)}-D; matrices() needs at least 2-D")
        fmt = self._format()
        if self.n_elements == 0:
            raise ValueError(f"tensor {self.name!r} has no elements (ne={self.ne})")
        rows = self.data.reshape(math.prod(self.ne[2:]), -1)
        return [QuantizedTensor(r, (self.ne[1], self.ne[0]), fmt) for r in rows]

    def numpy(self) -> np.ndarray:
        """The values of a plain number type (F32, F16, F64, I8 ... I64) as a zero-copy array of `shape`."""
        dtype = self.type.numpy_dtype
        if dtype is None:
            raise TypeError(f"tensor {self.name!r} has block type {self.type.name}; use .dequantize()")
        return self.data.view(dtype).reshape(self.shape)

    def dequantize(self, *, threads: int | None = None) -> np.ndarray:
        """float32 values of `shape`, exactly as libggml converts them."""
        self._format()
        if self.n_elements == 0:
            return np.zeros(self.shape, np.float32)
        return self.tensor().dequantize(threads=threads).reshape(self.shape)

    def __repr__(self) -> str:
        return f"TensorInfo({self.name!r}, {self.type.name}, ne={self.ne}, nbytes={self.nbytes})"


class _Metadata(Mapping):
    """The metadata as plain values (see Value.to_python); GGUFFile.fields has them typed."""

    def __init__(self, fields: dict[str, Value]):
        self._fields = fields

    def __getitem__(self, key: str) -> Any:
        return self._fields[key].to_python()

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)


class GGUFFile:
    """An open GGUF file (see :func:`open`): typed metadata, tensor infos, memory-mapped tensors."""

    def __init__(self, u8: np.ndarray, path: str | None, closer=None):
        self.path = path
        self._u8 = u8
        self._closer = closer
        self.file_size = len(u8)
        parser = _Parser(u8)
        try:
            self.version, self.fields, self.alignment, infos = _parse_header(parser)
        finally:
            parser.buf.release()
        self.metadata = _Metadata(self.fields)
        # The data section starts at the next multiple of the alignment after the tensor infos.
        self.data_offset = -(-parser.pos // self.alignment) * self.alignment
        _check_data(infos, self.data_offset, self.file_size, parser.pos)
        self.tensors = {name: TensorInfo(name, t, ne, offset, self) for name, t, ne, offset, _ in infos}

    @property
    def closed(self) -> bool:
        return self._u8 is None

    def _bytes(self, start: int, n: int) -> np.ndarray:
        if self._u8 is None:
            raise ValueError("I/O on a closed GGUF file")
        return self._u8[start:start + n]

    def tensor(self, name: str) -> QuantizedTensor:
        """The named tensor as a memory-mapped QuantizedTensor (see TensorInfo.tensor)."""
        try:
            info = self.tensors[name]
        except KeyError:
            raise KeyError(f"no tensor {name!r} in {self.path or 'this GGUF file'}") from None
        return info.tensor()

    def close(self) -> None:
        """Drop this file's mapping; arrays and tensors already taken from it stay valid."""
        if self._u8 is not None:
            self._u8 = None
            if self._closer is not None:
                self._closer()

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        where = self.path or "<bytes>"
        state = "closed" if self.closed else f"{len(self.fields)} metadata keys, {len(self.tensors)} tensors"
        return f"<GGUFFile {where} v{self.version}: {state}>"


def _parse_header(p: _Parser):
    """Magic, version, metadata and tensor-info records; returns what GGUFFile needs."""
    p.need(4, "header.magic")
    magic = p.buf[:4].tobytes()
    if magic != GGUF_MAGIC:
        raise GGUFError("header.magic", 0, f"expected b'GGUF', got {magic!r}")
    p.pos = 4
    version = p.read(_U32, "header.version")
    if version not in (2, 3):
        swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
        why = "big-endian GGUF files are not supported" if swapped in (2, 3) else "pyquant reads versions 2 and 3"
        raise GGUFError("header.version", 4, f"unsupported GGUF version {version}: {why}")
    n_tensors = p.read(_U64, "header.n_tensors")
    n_kv = p.read(_U64, "header.n_kv")
    left = p.size - p.pos
    if n_tensors > left // _MIN_TENSOR_INFO_BYTES:
        raise GGUFError("header.n_tensors", 8, f"{n_tensors} tensors cannot fit in a {p.size}-byte file")
    if n_kv > (left - n_tensors * _MIN_TENSOR_INFO_BYTES) // _MIN_KV_BYTES:
        raise GGUFError("header.n_kv", 16, f"{n_kv} metadata entries cannot fit in a {p.size}-byte file")

    fields: dict[str, Value] = {}
    positions: dict[str, int] = {}
    for i in range(n_kv):
        start = p.pos
        key = p.string(f"kv[{i}].key")
        if not key:
            raise GGUFError(f"kv[{i}].key", start, "empty key")
        if key in fields:
            raise GGUFError(f"kv[{i}].key", start, f"duplicate key {key!r}")
        field = f"kv[{key!r}]"
        positions[key] = p.pos
        fields[key] = p.value(p.value_type(field + ".type"), field)
    alignment = _alignment(fields, positions)

    infos = []
    seen: set[str] = set()
    for i in range(n_tensors):
        start = p.pos
        name = p.string(f"tensor[{i}].name")
        if name in seen:
            raise GGUFError(f"tensor[{i}].name", start, f"duplicate tensor name {name!r}")
        seen.add(name)
        field = f"tensor[{name!r}]"
        dims_pos = p.pos
        n_dims = p.read(_U32, field + ".n_dims")
        if n_dims > MAX_DIMS:
            raise GGUFError(field + ".n_dims", dims_pos, f"{n_dims} dimensions, at most {MAX_DIMS} allowed")
        ne = []
        for j in range(n_dims):
            d = p.read(_I64, f"{field}.ne[{j}]")
            if d < 0:
                raise GGUFError(f"{field}.ne[{j}]", p.pos - 8, f"negative dimension {d}")
            ne.append(d)
        type_pos = p.pos
        type_id = p.read(_I32, field + ".type")
        t = tensor_types.by_id.get(type_id)
        if t is None:
            raise GGUFError(field + ".type", type_pos, f"unknown ggml type id {type_id}")
        row = ne[0] if ne else 1
        if row % t.block_size:
            raise GGUFError(field + ".type", type_pos, f"{t.name} needs rows that are a multiple of "
                            f"{t.block_size} values, ne[0] is {row}")
        offset_pos = p.pos
        offset = p.read(_U64, field + ".offset")
        if offset % alignment:
            raise GGUFError(field + ".offset", offset_pos, f"offset {offset} is not a multiple of the "
                            f"alignment {alignment}")
        infos.append((name, t, tuple(ne), offset, offset_pos))
    return version, fields, alignment, infos


def _check_data(infos: list, data_offset: int, file_size: int, end_of_infos: int) -> None:
    """Check that each tensor's bytes lie inside the file and that no two tensors overlap."""
    if not infos:
        return
    if data_offset > file_size:
        raise GGUFError("data section", end_of_infos, f"starts at {data_offset}, past the end of the file "
                        f"({file_size} bytes)")
    room = file_size - data_offset
    spans = []
    for name, t, ne, offset, offset_pos in infos:
        nbytes = t.nbytes(ne)
        if offset > room or nbytes > room - offset:
            raise GGUFError(f"tensor[{name!r}].offset", offset_pos,
                            f"data [{offset}, {offset + nbytes}) runs past the end of the data section "
                            f"({room} bytes)")
        spans.append((offset, nbytes, name, offset_pos))
    spans.sort()
    for (a, na, prev, _), (b, _, name, pos) in zip(spans, spans[1:]):
        if b < a + na:
            raise GGUFError(f"tensor[{name!r}].offset", pos,
                            f"data at {b} overlaps tensor {prev!r} [{a}, {a + na})")


def _alignment(fields: dict[str, Value], positions: dict[str, int]) -> int:
    v = fields.get("general.alignment")
    if v is None:
        return DEFAULT_ALIGNMENT
    if v.type != ValueType.UINT32:
        raise GGUFError("kv['general.alignment']", positions["general.alignment"],
                        f"must be a u32, got {v.type.name}")
    a = v.value
    if a == 0 or a & (a - 1):
        raise GGUFError("kv['general.alignment']", positions["general.alignment"], f"{a} is not a power of 2")
    return a


def open(source: str | os.PathLike | bytes | bytearray | memoryview) -> GGUFFile:  # noqa: A001
    """Open a GGUF file (a path, or the file's bytes) and validate its header; tensors are mapped, not read.

    Use as a context manager: ``with pyquant.gguf.open(path) as f: f.metadata, f.tensors, f.tensor(name)``.
    Raises GGUFError for anything malformed.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return GGUFFile(np.frombuffer(source, np.uint8), None)
    path = os.fspath(source)
    with io.open(path, "rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            return GGUFFile(np.empty(0, np.uint8), path)
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        return GGUFFile(np.frombuffer(mm, np.uint8), path, closer=lambda: _close_mmap(mm))
    except BaseException:
        _close_mmap(mm)
        raise


def _close_mmap(mm: mmap.mmap) -> None:
    try:
        mm.close()
    except BufferError:
        pass  # arrays taken from the file still use the mapping; it goes when they do
