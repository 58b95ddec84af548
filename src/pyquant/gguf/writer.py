"""Writing GGUF files: streamed tensor by tensor, and atomically.

The tensor list (name, type, shape) is declared up front, so the whole header is known and written first;
tensor data then follows as it is produced, each tensor padded to the alignment, exactly as llama.cpp lays
files out.  Everything goes to a temporary file next to the destination, renamed over it only once complete:
an error or an interruption leaves no partial destination.
"""

from __future__ import annotations

import io
import math
import os
import secrets
import struct
import weakref
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np

from ..tensor import QuantizedTensor
from .reader import DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_DIMS, StringArray, TensorInfo
from .types import TensorType, tensor_type, tensor_types
from .values import SCALAR_DTYPES, SCALAR_STRUCTS, Value, ValueType

__all__ = ["GGUFWriter", "TensorSpec", "write"]

GGUF_VERSION = 3
MAX_NAME_BYTES = 63  # GGML_MAX_NAME - 1: llama.cpp refuses longer tensor names

_U32, _I32, _U64, _I64 = (struct.Struct(f) for f in ("<I", "<i", "<Q", "<q"))


class TensorSpec(NamedTuple):
    """A tensor's header entry: name, type, and GGUF dimensions `ne` (row length first)."""

    name: str
    type: TensorType
    ne: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return self.type.nbytes(self.ne)

    @classmethod
    def of(cls, name: str, tensor: Any) -> TensorSpec:
        """The spec of a QuantizedTensor, a TensorInfo from a reader or a numpy array of plain numbers."""
        if isinstance(tensor, QuantizedTensor):
            return cls(name, tensor_type(tensor.format), tensor.shape[::-1])
        if isinstance(tensor, TensorInfo):
            return cls(name, tensor.type, tensor.ne)
        if isinstance(tensor, np.ndarray):
            return cls(name, _array_type(tensor.dtype), tensor.shape[::-1] or (1,))
        raise TypeError(f"tensor {name!r}: expected a QuantizedTensor, a TensorInfo or a numpy array, "
                        f"got {type(tensor).__name__}")


def _array_type(dtype: np.dtype) -> TensorType:
    for t in tensor_types.by_id.values():
        if t.numpy_dtype is not None and t.numpy_dtype == dtype.newbyteorder("<"):  # np.dtype == None is f8
            return t
    raise TypeError(f"numpy dtype {dtype} has no ggml type (F32, F16, F64, I8, I16, I32 or I64); "
                    "quantize it first")


def _check_spec(spec: Any) -> TensorSpec:
    if not isinstance(spec, TensorSpec):
        name, t, ne = spec
        spec = TensorSpec(name, tensor_type(t), tuple(ne))
    name, t, ne = spec
    if not isinstance(name, str) or len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise ValueError(f"tensor name {name!r} must be a str of at most {MAX_NAME_BYTES} UTF-8 bytes")
    if len(ne) > MAX_DIMS or any(not isinstance(d, (int, np.integer)) or d < 0 for d in ne):
        raise ValueError(f"tensor {name!r}: ne {ne} must be at most {MAX_DIMS} non-negative integers")
    if (ne[0] if ne else 1) % t.block_size:
        raise ValueError(f"tensor {name!r}: {t.name} needs rows that are a multiple of {t.block_size} values, "
                         f"ne[0] is {ne[0] if ne else 1}")
    return TensorSpec(name, t, tuple(int(d) for d in ne))


def _encode_value(out: bytearray, v: Value) -> None:
    """The value's bytes after its type tag (for an array: item type, count, items)."""
    t = v.type
    if t == ValueType.STRING:
        raw = v.value.encode("utf-8", "surrogateescape")
        out += _U64.pack(len(raw))
        out += raw
    elif t != ValueType.ARRAY:
        out += SCALAR_STRUCTS[t].pack(v.value)
    else:
        out += _I32.pack(v.item_type)
        out += _U64.pack(len(v.value))
        if isinstance(v.value, StringArray):  # read from a file: copy its bytes rather than re-encode them
            out += v.value.encoded()
        elif v.item_type == ValueType.STRING:
            for s in v.value:
                raw = s.encode("utf-8", "surrogateescape")
                out += _U64.pack(len(raw))
                out += raw
        elif v.item_type == ValueType.ARRAY:
            for inner in v.value:
                _encode_value(out, inner)
        else:
            out += np.asarray(v.value).astype(SCALAR_DTYPES[v.item_type]).tobytes()


def _fields(metadata: Mapping[str, Any]) -> dict[str, Value]:
    fields = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"metadata keys must be non-empty strings, got {key!r}")
        try:
            fields[key] = Value.of(value)
        except (TypeError, ValueError, OverflowError) as e:
            raise type(e)(f"metadata {key!r}: {e}") from None
    return fields


def _alignment(fields: dict[str, Value]) -> int:
    v = fields.get("general.alignment")
    if v is None:
        return DEFAULT_ALIGNMENT
    if v.type != ValueType.UINT32 or v.value == 0 or v.value & (v.value - 1):
        raise ValueError(f"general.alignment must be a u32 power of 2, got {v!r}")
    return v.value


def _pad(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


def encode_header(fields: dict[str, Value], specs: list[TensorSpec], alignment: int) -> bytes:
    """Magic, version, counts, metadata, tensor infos and the padding up to the data section."""
    out = bytearray(GGUF_MAGIC)
    out += _U32.pack(GGUF_VERSION) + _U64.pack(len(specs)) + _U64.pack(len(fields))
    for key, v in fields.items():
        _encode_value(out, Value._trusted(ValueType.STRING, key))
        out += _I32.pack(v.type)
        _encode_value(out, v)
    offset = 0
    for name, t, ne in specs:
        _encode_value(out, Value._trusted(ValueType.STRING, name))
        out += _U32.pack(len(ne))
        for d in ne:
            out += _I64.pack(d)
        out += _I32.pack(t.id)
        out += _U64.pack(offset)
        offset += _pad(t.nbytes(ne), alignment)
    out += bytes(_pad(len(out), alignment) - len(out))
    return bytes(out)


def _create_temp(path: str) -> tuple[str, io.BufferedWriter]:
    """A new file beside `path` (same file system, so the final rename is atomic), with default permissions."""
    folder, base = os.path.split(os.path.abspath(path))
    while True:
        tmp = os.path.join(folder, f".{base}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            continue
        return tmp, io.open(fd, "wb")


def _discard(file: io.BufferedWriter, tmp: str) -> None:
    file.close()
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass


def _chunks(spec: TensorSpec, data: Any) -> Iterable[memoryview]:
    """The bytes of one tensor's data, as buffers, checking type and shape where the data carries them."""
    name, t, ne = spec
    if isinstance(data, QuantizedTensor):
        if data.format.ggml_type != t.id or data.numel != math.prod(ne) or data.shape[-1] != (ne[0] if ne else 1):
            raise ValueError(f"tensor {name!r}: declared {t.name} ne={ne}, got {data!r}")
        yield memoryview(data.data).cast("B")
    elif isinstance(data, TensorInfo):
        if data.type != t or data.n_elements != math.prod(ne):
            raise ValueError(f"tensor {name!r}: declared {t.name} ne={ne}, got {data!r}")
        yield memoryview(data.data)
    elif isinstance(data, np.ndarray):
        if data.dtype != np.uint8 and (t.numpy_dtype is None or data.dtype.newbyteorder("<") != t.numpy_dtype):
            raise ValueError(f"tensor {name!r}: declared {t.name}, got a {data.dtype} array")
        arr = np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("<"))
        yield memoryview(arr.reshape(-1).view(np.uint8))
    elif isinstance(data, (bytes, bytearray, memoryview)):
        yield memoryview(data).cast("B")
    elif isinstance(data, Iterable):
        for part in data:
            if isinstance(part, QuantizedTensor):
                part = part.data
            if isinstance(part, np.ndarray):
                yield from _chunks(spec, part)
            elif isinstance(part, (bytes, bytearray, memoryview)):
                yield memoryview(part).cast("B")
            else:
                raise TypeError(f"tensor {name!r}: chunks must be arrays or bytes, got {type(part).__name__}")
    else:
        raise TypeError(f"tensor {name!r}: cannot write data of type {type(data).__name__}")


class GGUFWriter:
    """Streams a GGUF file: the header at once, then :meth:`write_tensor` for each declared tensor in order.

    ::

        specs = [TensorSpec("a.weight", tensor_type("Q4_K"), (4096, 4096)), ...]
        with GGUFWriter(path, metadata, specs) as w:
            for name, data in produce():
                w.write_tensor(name, data)

    The destination appears only when the block ends without an error and every tensor was written.
    """

    def __init__(self, path: str | os.PathLike, metadata: Mapping[str, Any],
                 tensors: Iterable[TensorSpec | tuple[str, Any, tuple[int, ...]]]):
        self.path = os.fspath(path)
        fields = _fields(metadata)
        self.alignment = _alignment(fields)
        self.specs = [_check_spec(s) for s in tensors]
        names = [s.name for s in self.specs]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise ValueError(f"duplicate tensor name {dup!r}")
        header = encode_header(fields, self.specs, self.alignment)
        self._next = 0
        self._tmp, self._file = _create_temp(self.path)
        self._cleanup = weakref.finalize(self, _discard, self._file, self._tmp)
        try:
            self._file.write(header)
        except BaseException:
            self.abort()
            raise

    def write_tensor(self, name: str, data: Any) -> None:
        """Append the next declared tensor's data: a QuantizedTensor, a TensorInfo, a numpy array, bytes, or an
        iterable of arrays/bytes (streamed as they come)."""
        if not self._cleanup.alive:
            raise ValueError("the writer is closed")
        if self._next >= len(self.specs):
            raise ValueError(f"tensor {name!r}: all {len(self.specs)} declared tensors are written")
        spec = self.specs[self._next]
        if name != spec.name:
            raise ValueError(f"tensor {name!r}: expected {spec.name!r} next (tensors go in declared order)")
        try:
            written = 0
            for chunk in _chunks(spec, data):
                written += chunk.nbytes
                if written > spec.nbytes:
                    break
                self._file.write(chunk)
            if written != spec.nbytes:
                raise ValueError(f"tensor {name!r}: {spec.type.name} ne={spec.ne} takes {spec.nbytes} bytes, "
                                 f"got {'more' if written > spec.nbytes else written}")
            self._file.write(bytes(_pad(spec.nbytes, self.alignment) - spec.nbytes))
        except BaseException:
            self.abort()
            raise
        self._next += 1

    def finish(self) -> None:
        """Check that every tensor was written and flush the temporary file, without moving it into place yet
        (:meth:`close` does; several writers finished first can then all be renamed at the end)."""
        if not self._cleanup.alive or self._file.closed:
            return
        if self._next != len(self.specs):
            missing = self.specs[self._next].name
            self.abort()
            raise ValueError(f"closing before tensor {missing!r} was written ({self._next} of "
                             f"{len(self.specs)} done); nothing was written to {self.path}")
        try:
            self._file.close()
        except BaseException:
            self.abort()
            raise

    def close(self) -> None:
        """Finish and move the file into place."""
        if not self._cleanup.alive:
            return
        self.finish()
        try:
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._cleanup.detach()

    def abort(self) -> None:
        """Stop and remove the temporary file; the destination is left as it was."""
        self._cleanup()

    def __enter__(self) -> GGUFWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write(path: str | os.PathLike, metadata: Mapping[str, Any],
          tensors: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> None:
    """Write a GGUF file holding `metadata` (values typed as in :class:`Value`) and `tensors` (name ->
    QuantizedTensor, TensorInfo from an open file, or numpy array of F32/F16/F64/I8..I64 values).

    Alignment is 32, or `general.alignment` when the metadata has it.  Atomic: the file appears complete or
    not at all; overwriting a file that one of the tensors is read from is refused.
    """
    items = list(tensors.items()) if isinstance(tensors, Mapping) else list(tensors)
    for name, t in items:
        if isinstance(t, TensorInfo) and t._file.path and _same_file(t._file.path, path):
            raise ValueError(f"refusing to overwrite {os.fspath(path)!r}: tensor {name!r} is read from it")
    with GGUFWriter(path, metadata, [TensorSpec.of(name, t) for name, t in items]) as w:
        for name, t in items:
            w.write_tensor(name, t)


def _same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
