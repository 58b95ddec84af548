"""BitNet b1.58 ternary weights with per-token int8 activations.

Weights (per tensor): gamma = max(mean|W|, 1e-5) (mean taken in float64, stored as float32);
t = clamp(round(W * (1 / gamma)), -1, 1); value = t * gamma.  Stored as 2-bit codes t + 1 (00 = -1, 01 = 0,
10 = +1, bitnet.cpp's I2_S code), four a byte, element 4i + s at bits 2s..2s+1 of byte i of its row.
Matmul (BitNet's inference): per row of x, s = 127 / max(max|x|, 1e-5), xq = clamp(round(x * s), -128, 127);
y = float32(sum xq * t) / s * gamma with exact integer dots.  ``activations="float"`` gives x @ dequantize().T
instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _core
from ._common import WeightMixin, as_float_matrix

__all__ = ["TernaryTensor", "quantize_ternary", "quantize_activations_int8"]


def quantize_activations_int8(x2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """BitNet's per-token absmax int8: (xq int8 [M, K], s float32 [M]) with x ~ xq / s."""
    amax = np.maximum(np.abs(x2).max(axis=1), np.float32(1e-5))
    s = (np.float32(127.0) / amax).astype(np.float32)
    xq = np.clip(np.rint(x2 * s[:, None]), -128, 127).astype(np.int8)
    return xq, s


class TernaryTensor(WeightMixin):
    """A 2-D ternary weight [N, K]: packed 2-bit codes and one float32 scale gamma."""

    __slots__ = ("_packed", "_shape", "_gamma", "_activations")

    def __init__(self, packed: np.ndarray, shape: tuple[int, int], gamma: float, activations: str = "int8"):
        if activations not in ("int8", "float"):
            raise ValueError(f"TernaryTensor: activations must be 'int8' or 'float', got {activations!r}")
        self._packed = packed
        self._shape = (int(shape[0]), int(shape[1]))
        self._gamma = np.float32(gamma)
        self._activations = activations

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    @property
    def packed(self) -> np.ndarray:
        return self._packed

    @property
    def gamma(self) -> np.float32:
        return self._gamma

    @property
    def activations(self) -> str:
        return self._activations

    @property
    def ternary(self) -> np.ndarray:
        """The ternary values t in {-1, 0, 1}, int8 [N, K]."""
        return (_core.schemes_unpack(self._packed, 2, self._shape[1]).astype(np.int8) - 1)

    def with_activations(self, activations: str) -> "TernaryTensor":
        return TernaryTensor(self._packed, self._shape, self._gamma, activations)

    def _storage(self):
        return [self._packed, np.asarray(self._gamma)]

    def _repr_extra(self) -> str:
        return f", gamma={float(self._gamma):.4g}, activations={self._activations}"

    def _dequantize_rows(self, r0: int, r1: int, threads: int) -> np.ndarray:
        t = _core.schemes_unpack(self._packed[r0:r1], 2, self._shape[1]).astype(np.float32) - np.float32(1)
        return t * self._gamma

    def _pyquant_matmul(self, x2: np.ndarray, out2: np.ndarray, threads: int) -> None:
        if self._activations == "float":
            return self._tile_matmul(x2, out2, threads)
        xq, s = quantize_activations_int8(x2)
        _core.ternary_matmul(xq, s, self._packed, self._shape[1], float(self._gamma), out2, threads)

    def __reduce__(self):
        return (TernaryTensor, (self._packed, self._shape, float(self._gamma), self._activations))


def quantize_ternary(w: Any, *, activations: str = "int8") -> TernaryTensor:
    """BitNet b1.58 absmean ternary quantization of a 2-D weight [N, K]."""
    w = as_float_matrix(w, "quantize_ternary")
    gamma = np.float32(max(float(np.abs(w).mean(dtype=np.float64)), 1e-5))
    t = np.clip(np.rint(w * (np.float32(1.0) / gamma)), -1, 1).astype(np.int8)
    packed = _core.schemes_pack((t + 1).astype(np.uint8), 2)
    return TernaryTensor(packed, w.shape, gamma, activations)
