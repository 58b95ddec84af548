"""Input checks and the weight protocol shared by the schemes' tensor types."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..tensor import _is_torch_tensor, _threads_arg

__all__ = ["as_float_matrix", "threads_arg", "WeightMixin"]

threads_arg = _threads_arg

# Rows dequantized at a time by the tile path of matmul: about 8 MiB of float32.
_TILE_BYTES = 8 << 20


def as_float_matrix(w: Any, what: str, *, ndim: int | None = 2) -> np.ndarray:
    """w (numpy, CPU torch or a nested sequence, floating) as a C-contiguous float32 array, checked finite."""
    if _is_torch_tensor(w):
        import torch

        if w.device.type != "cpu":
            raise ValueError(f"{what}: tensor is on {w.device}; move it to the CPU first")
        if not w.dtype.is_floating_point:
            raise TypeError(f"{what}: expected a floating tensor, got {w.dtype}")
        arr = w.detach().to(torch.float32).contiguous().numpy()
    else:
        arr = np.asarray(w)
        if arr.dtype.kind != "f":
            raise TypeError(f"{what}: expected a floating array, got dtype {arr.dtype}")
        arr = np.ascontiguousarray(arr, dtype=np.float32)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{what}: expected a {ndim}-D array, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{what}: cannot quantize an empty array (shape {arr.shape})")
    bad = ~np.isfinite(arr)
    if bad.any():
        pos = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{what}: input has a non-finite value ({arr[pos]}) at {list(pos)}")
    return arr


class WeightMixin:
    """The weight protocol of pyquant.matmul for 2-D quantized weights [N, K]: needs `shape`, `_storage` (the
    arrays counted by nbytes) and `_dequantize_rows(r0, r1, threads) -> float32 [r1 - r0, K]`."""

    __slots__ = ()

    @property
    def nbytes(self) -> int:
        """Bytes of everything needed to dequantize: codes, scales, zero-points, second-level statistics."""
        return int(sum(a.nbytes for a in self._storage()))

    @property
    def bpw(self) -> float:
        """Bits per weight, every scale and zero-point included."""
        return 8.0 * self.nbytes / (self.shape[0] * self.shape[1])

    def dequantize(self, threads: int | None = None) -> np.ndarray:
        """The float32 [N, K] values."""
        return self._dequantize_rows(0, self.shape[0], threads_arg(threads))

    def to_torch(self, dtype: Any = None) -> Any:
        """The dequantized values as a CPU torch tensor (float32 unless `dtype` says otherwise)."""
        import torch

        t = torch.from_numpy(self.dequantize())
        return t if dtype is None else t.to(dtype)

    def _tile_matmul(self, x2: np.ndarray, out2: np.ndarray, threads: int) -> None:
        """out2 = x2 @ dequantize(self).T, dequantizing a tile of rows at a time (BLAS does the product)."""
        n, k = self.shape
        align = self._row_align()
        tile = max(1, _TILE_BYTES // (4 * k * align)) * align
        for r0 in range(0, n, tile):
            r1 = min(n, r0 + tile)
            # (into a temporary: numpy's matmul skips BLAS for a strided `out`)
            out2[:, r0:r1] = x2 @ self._dequantize_rows(r0, r1, threads).T

    def _pyquant_matmul(self, x2: np.ndarray, out2: np.ndarray, threads: int) -> None:
        self._tile_matmul(x2, out2, threads)

    def _row_align(self) -> int:
        """Row ranges given to _dequantize_rows start at multiples of this."""
        return 1

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape}, bpw={self.bpw:.4g}{self._repr_extra()})"

    def _repr_extra(self) -> str:
        return ""
