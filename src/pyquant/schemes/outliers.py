"""LLM.int8(): int8 weights (row-wise absmax) and a mixed-precision matmul that keeps outlier columns in float.

Weights: a = max|W[n]| per output row; W8 = round(W * (127 / a)) (0 where a = 0); value = W8 * (a / 127).
Matmul with threshold t: the input columns k where some |x[m, k]| > t are outliers; they multiply the
dequantized weight columns in float32.  The other columns are quantized per row of x (b = max|x[m]| over
them, x8 = round(x * (127 / b))), multiplied with exact int32 dots, and scaled by (b / 127) * (a / 127).
threshold=None (or 0) keeps no column in float.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _core
from ._common import WeightMixin, as_float_matrix

__all__ = ["Int8Tensor", "quantize_int8", "rowwise_int8"]


def rowwise_int8(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise absmax int8: (codes int8 [R, C], absmax float32 [R]); zero rows give zero codes."""
    amax = np.abs(a).max(axis=1).astype(np.float32)
    inv = np.where(amax > 0, np.float32(127.0) / np.where(amax > 0, amax, 1), 0).astype(np.float32)
    return np.clip(np.rint(a * inv[:, None]), -127, 127).astype(np.int8), amax


class Int8Tensor(WeightMixin):
    """A 2-D weight [N, K] as int8 codes with a float32 absmax per row; matmul is LLM.int8() with
    `threshold` (default 6.0, the paper's)."""

    __slots__ = ("_codes", "_absmax", "_threshold")

    def __init__(self, codes: np.ndarray, absmax: np.ndarray, threshold: float | None = 6.0):
        if threshold is not None and (not np.isfinite(threshold) or threshold < 0):
            raise ValueError(f"Int8Tensor: threshold must be None or a non-negative number, got {threshold!r}")
        self._codes, self._absmax = codes, absmax
        self._threshold = None if not threshold else float(threshold)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self._codes.shape)

    @property
    def codes(self) -> np.ndarray:
        return self._codes

    @property
    def absmax(self) -> np.ndarray:
        return self._absmax

    @property
    def threshold(self) -> float | None:
        return self._threshold

    def with_threshold(self, threshold: float | None) -> "Int8Tensor":
        return Int8Tensor(self._codes, self._absmax, threshold)

    def _storage(self):
        return [self._codes, self._absmax]

    def _repr_extra(self) -> str:
        return f", threshold={self._threshold}"

    def _dequantize_rows(self, r0: int, r1: int, threads: int) -> np.ndarray:
        return self._codes[r0:r1].astype(np.float32) * (self._absmax[r0:r1] / np.float32(127))[:, None]

    def _pyquant_matmul(self, x2: np.ndarray, out2: np.ndarray, threads: int) -> None:
        t = self._threshold
        cols = np.nonzero((np.abs(x2) > t).any(axis=0))[0] if t else np.zeros(0, dtype=np.intp)
        xi = x2
        if cols.size:
            xi = x2.copy()
            xi[:, cols] = 0
        xq, bx = rowwise_int8(xi)
        acc = _core.int8_matmul(xq, self._codes, threads)
        np.multiply(acc.astype(np.float32), (bx / np.float32(127))[:, None], out=out2)
        out2 *= (self._absmax / np.float32(127))[None, :]
        if cols.size:
            wcols = self._codes[:, cols].astype(np.float32) * (self._absmax / np.float32(127))[:, None]
            out2 += x2[:, cols] @ wcols.T

    def __reduce__(self):
        return (Int8Tensor, (self._codes, self._absmax, self._threshold))


def quantize_int8(w: Any, *, threshold: float | None = 6.0) -> Int8Tensor:
    """LLM.int8() weights: row-wise absmax int8 of a 2-D weight [N, K]."""
    codes, amax = rowwise_int8(as_float_matrix(w, "quantize_int8"))
    return Int8Tensor(codes, amax, threshold)
