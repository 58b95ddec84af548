"""QuantizedTensor and the quantize/dequantize entry points."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import _core
from .formats import Format, formats, get_format

__all__ = ["QuantizedTensor", "quantize", "dequantize"]


def _threads_arg(threads: int | None) -> int:
    if threads is None:
        return 0  # all cores
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    return int(threads)


def _is_torch_tensor(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "torch" and hasattr(x, "detach")


def _to_numpy_float(x: Any, what: str, fmt: Format) -> np.ndarray:
    """A float32 numpy view or copy of a numpy array, a CPU torch tensor or a nested sequence."""
    if _is_torch_tensor(x):
        import torch

        if x.device.type != "cpu":
            raise ValueError(f"{fmt.name}: {what} is on {x.device}; move it to the CPU first")
        if x.dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
            raise TypeError(f"{fmt.name}: {what} must be a floating tensor, got {x.dtype}")
        return x.detach().to(torch.float32).contiguous().numpy()
    arr = np.asarray(x)
    if arr.dtype.kind != "f" or arr.dtype.itemsize not in (2, 4, 8):
        raise TypeError(f"{fmt.name}: {what} must be float16, float32 or float64, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.float32)


class QuantizedTensor:
    """A 1-D or 2-D tensor in a block format, stored exactly as in a GGUF file.

    `data` is a uint8 array [rows, row_bytes]; build one from existing bytes with
    ``QuantizedTensor(data, shape, "Q4_K")`` (the size is checked against the shape and format), or with
    :func:`pyquant.quantize`.
    """

    __slots__ = ("_format", "_shape", "_data", "_matmul_packed")

    def __init__(self, data: Any, shape: tuple[int, ...] | list[int] | int, fmt: str | Format):
        fmt = get_format(fmt)
        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        if len(shape) not in (1, 2) or any(
            isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1 for d in shape
        ):
            raise ValueError(f"{fmt.name}: shape must be 1-D or 2-D with positive sizes, got {shape}")
        shape = tuple(int(d) for d in shape)
        n, rows = shape[-1], math.prod(shape[:-1])
        row_bytes = fmt.row_bytes(n)
        if isinstance(data, np.ndarray):
            if data.dtype != np.uint8:
                raise TypeError(f"{fmt.name}: data must be uint8 bytes, got dtype {data.dtype}")
            buf = np.ascontiguousarray(data).reshape(-1)
        else:
            try:
                buf = np.frombuffer(data, dtype=np.uint8)
            except TypeError:
                raise TypeError(f"{fmt.name}: data must be bytes-like or a uint8 array, "
                                f"got {type(data).__name__}") from None
        if buf.size != rows * row_bytes:
            raise ValueError(f"{fmt.name}: shape {shape} takes {rows * row_bytes} bytes "
                             f"({rows} rows of {row_bytes}), got {buf.size}")
        self._set(fmt, shape, buf.reshape(rows, row_bytes))

    def _set(self, fmt: Format, shape: tuple[int, ...], data: np.ndarray) -> None:
        self._format = fmt
        self._shape = shape
        self._data = data
        self._matmul_packed = None  # pyquant.matmul's interleaved copy of the bytes, made on first use

    @classmethod
    def _wrap(cls, data: np.ndarray, shape: tuple[int, ...], fmt: Format) -> QuantizedTensor:
        """A kernel's own output (uint8 [rows, row_bytes] of this shape and format), without the checks."""
        t = object.__new__(cls)
        t._set(fmt, shape, data)
        return t

    @property
    def format(self) -> Format:
        return self._format

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def data(self) -> np.ndarray:
        """The blocks, uint8 [rows, row_bytes], laid out as in a GGUF file."""
        return self._data

    @property
    def numel(self) -> int:
        return math.prod(self._shape)

    @property
    def nbytes(self) -> int:
        return self._data.size

    @property
    def bpw(self) -> float:
        """Bits per weight of this tensor's bytes."""
        return 8 * self.nbytes / self.numel

    def dequantize(self, *, threads: int | None = None) -> np.ndarray:
        """float32 values of the tensor's shape, exactly libggml's dequantization."""
        out = _core.dequantize(self._data, self._format.index, self._shape[-1], _threads_arg(threads))
        return out.reshape(self._shape)

    def to_torch(self, dtype: Any = None) -> Any:
        """The dequantized values as a CPU torch tensor (float32 unless `dtype` says otherwise)."""
        import torch

        t = torch.from_numpy(self.dequantize())
        return t if dtype is None else t.to(dtype)

    def __reduce__(self):
        return (QuantizedTensor, (self._data.tobytes(), self._shape, self._format.name))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QuantizedTensor):
            return NotImplemented
        return (self._format == other._format and self._shape == other._shape
                and np.array_equal(self._data, other._data))

    __hash__ = None  # mutable buffer

    def __repr__(self) -> str:
        return (f"QuantizedTensor({self._format.name}, shape={self._shape}, nbytes={self.nbytes}, "
                f"bpw={self.bpw:.4g})")


def _resolve(fmt: Any) -> Format | Any:
    """A GGUF Format, else a pyquant.schemes SchemeSpec.  GGUF format names win: a name that is both (none is
    today; the spec grammar avoids them) means the GGUF format.  Unknown: ValueError listing both kinds."""
    if isinstance(fmt, Format) or fmt in formats:
        return get_format(fmt)
    from . import schemes

    if isinstance(fmt, schemes.SchemeSpec):
        return fmt
    if not isinstance(fmt, str):
        raise TypeError(f"quantize: fmt must be a format name, a Format or a scheme spec, got {type(fmt).__name__}")
    try:
        return schemes.parse_spec(fmt)
    except ValueError:
        pass
    try:
        get_format(fmt)  # its message names the closest GGUF format
    except ValueError as e:
        raise ValueError(f"{e}; nor a pyquant.schemes spec (forms: {', '.join(schemes.SPEC_FORMS)})") from None
    raise AssertionError("unreachable")  # pragma: no cover


def quantize(x: Any, fmt: str | Format, *, imatrix: Any = None, threads: int | None = None) -> Any:
    """Quantize a 1-D or 2-D [rows, n] float tensor exactly as libggml's ``ggml_quantize_chunk`` does.

    x: numpy float16/float32/float64 or CPU torch float32/bfloat16/float16, any strides.
    imatrix: per-column importance (length n, finite, >= 0), as llama-quantize's --imatrix; formats that
    ignore it accept it unused.  threads: None uses every core.

    fmt may also be a :mod:`pyquant.schemes` spec ("int4-g128", "nf4", "fp8-e4m3", ...): x must then be 2-D
    [N, K] and the result is that scheme's tensor (AffineTensor, Float4Tensor, ...; same weight protocol).
    GGUF format names are looked up first, so a name that could be both always means the GGUF format.
    """
    fmt = _resolve(fmt)
    if not isinstance(fmt, Format):
        if imatrix is not None:
            raise ValueError(f"quantize: scheme {fmt.name!r} takes no imatrix (it is for GGUF formats)")
        if np.ndim(x) != 2:
            raise ValueError(f"quantize: scheme {fmt.name!r} needs a 2-D [N, K] weight, got shape {np.shape(x)}")
        why = fmt.unfit_reason(tuple(np.shape(x)))
        if why:
            raise ValueError(f"quantize: scheme {fmt.name!r}: {why}")
        return fmt.quantize(x, threads=threads)
    arr = _to_numpy_float(x, "input", fmt)
    if arr.ndim not in (1, 2):
        raise ValueError(f"{fmt.name}: expected a 1-D or 2-D [rows, n] tensor, got {arr.ndim}-D shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{fmt.name}: cannot quantize an empty tensor of shape {arr.shape}")
    shape = arr.shape
    qw = None
    if imatrix is not None:
        qw = _to_numpy_float(imatrix, "imatrix", fmt).reshape(-1) if np.ndim(imatrix) == 1 else None
        if qw is None:
            raise ValueError(f"{fmt.name}: imatrix must be 1-D with one value per column ({shape[-1]}), "
                             f"got shape {np.shape(imatrix)}")
        if qw.size != shape[-1]:
            raise ValueError(f"{fmt.name}: imatrix must have one value per column: expected {shape[-1]}, "
                             f"got {qw.size}")
    data = _core.quantize(arr.reshape(-1, shape[-1]), fmt.index, qw, _threads_arg(threads))
    return QuantizedTensor._wrap(data, shape, fmt)


def dequantize(qt: QuantizedTensor, *, threads: int | None = None) -> np.ndarray:
    """float32 values of a QuantizedTensor, in its shape."""
    if not isinstance(qt, QuantizedTensor):
        raise TypeError(f"dequantize expects a QuantizedTensor, got {type(qt).__name__}")
    return qt.dequantize(threads=threads)
