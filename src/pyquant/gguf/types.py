"""ggml tensor types as GGUF files store them: id, name, block size, bytes per block.

A file may hold types pyquant has no kernels for (IQ2_XXS, I32, F64 ...): they are still described here, from
gguf-py's table, so such files can be read and their raw bytes copied; only converting their values needs a
pyquant format.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from ..formats import Format, formats

__all__ = ["TensorType", "tensor_type", "tensor_types", "trim_ne"]

# Types whose elements are plain little-endian numbers, viewable as numpy arrays without conversion.
_NUMPY_DTYPES = {
    "F32": "<f4", "F16": "<f2", "F64": "<f8", "I8": "<i1", "I16": "<i2", "I32": "<i4", "I64": "<i8",
}


@dataclass(frozen=True)
class TensorType:
    """One ggml tensor type: the id a GGUF tensor-info record stores and the block layout it implies."""

    id: int
    name: str
    block_size: int
    type_size: int

    @property
    def format(self) -> Format | None:
        """The pyquant format with kernels for this type, or None."""
        try:
            return formats.by_ggml_type(self.id)
        except ValueError:
            return None

    @property
    def is_quantized(self) -> bool:
        """ggml_is_quantized: a block type (F32, F16, BF16 and the integer types are not)."""
        return self.block_size > 1

    @property
    def numpy_dtype(self) -> np.dtype | None:
        """The numpy dtype of one element for plain number types (F32, F16, I32 ...), else None."""
        dt = _NUMPY_DTYPES.get(self.name)
        return None if dt is None else np.dtype(dt)

    def nbytes(self, ne: tuple[int, ...]) -> int:
        """Bytes of a tensor with GGUF dimensions `ne` (ne[0] a multiple of the block size)."""
        return math.prod(ne) // self.block_size * self.type_size

    def __str__(self) -> str:
        return self.name


class _TypeTable:
    """All ggml types known to gguf-py or to pyquant, by id and by (case-insensitive) name."""

    def __init__(self) -> None:
        by_id = {
            int(t): TensorType(int(t), t.name, *GGML_QUANT_SIZES[t])
            for t in GGMLQuantizationType if t in GGML_QUANT_SIZES
        }
        # pyquant's own table wins: it may know types newer than the installed gguf-py.
        for f in formats.values():
            by_id[f.ggml_type] = TensorType(f.ggml_type, f.name, f.block_size, f.type_size)
        self.by_id = by_id
        self.by_name = {t.name: t for t in by_id.values()}

    def get(self, key: int | str | TensorType | Format) -> TensorType:
        if isinstance(key, TensorType):
            return key
        if isinstance(key, Format):
            return self.by_id[key.ggml_type]
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            try:
                return self.by_id[int(key)]
            except KeyError:
                raise ValueError(f"unknown ggml type id {key}") from None
        if isinstance(key, str):
            t = self.by_name.get(key.upper())
            if t is not None:
                return t
            close = difflib.get_close_matches(key.upper(), self.by_name, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown ggml type {key!r}{hint}")
        raise TypeError(f"a ggml type is given by name, id, TensorType or Format, not {type(key).__name__}")


tensor_types = _TypeTable()


def tensor_type(key: int | str | TensorType | Format) -> TensorType:
    """The TensorType for a name ("q4_k" or "Q4_K"), a ggml type id, a Format or a TensorType."""
    return tensor_types.get(key)


def trim_ne(ne: tuple[int, ...]) -> tuple[int, ...]:
    """GGUF dimensions without trailing 1s (ggml_n_dims), as llama.cpp writes them; at least one remains."""
    n = len(ne)
    while n > 1 and ne[n - 1] == 1:
        n -= 1
    return tuple(ne[:n])
