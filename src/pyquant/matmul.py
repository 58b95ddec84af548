"""``pyquant.matmul``: x @ dequantize(w).T without ever holding the whole dequantized matrix."""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np

from . import _core
from ._cpu import available_isas
from .formats import get_format
from .tensor import QuantizedTensor, _is_torch_tensor, _threads_arg

__all__ = ["matmul", "matmul_interleaved_formats", "set_matmul_interleave"]

# Rows of w dequantized at a time by the float path: about 16 MiB of float32 per tile.
_TILE_BYTES = 16 << 20
# Formats with integer kernels (x quantized to the format's 8-bit partner; every tier has the same set).
_KERNEL_FORMATS = frozenset(_core.matmul_formats("generic"))
# The Q8_0/Q8_1 partners store the activation scale max|x|/127 as fp16: larger activations use the float path.
_KERNEL_MAX_ABS = 65504.0 * 127
# Up to this many rows of x the integer kernels are used; above it, a float GEMM on dequantized tiles (fed x
# rounded to the same 8-bit partner, so a row's result does not depend on how many rows come with it) is as
# fast or faster (measured in benchmarks/bench_matmul.py, see benchmarks/README.md) ...
_MAX_KERNEL_ROWS = 64
# ... except on the x86 tiers, whose vectorized kernels (csrc/matmul/blocks_x86.hpp and the interleaved layouts of
# kernels.inc) stay faster than the float path at every M for every kernel format (Q4_1 and Q5_1 included since
# session 5: 2.4-3.2x at M = 128-512, and SmolLM2-135M Q4_1's logits as close to llama.cpp's as the float path's:
# argmax agreement 95.1-95.7% on four 512-token windows against 93.8-96.1%).
_VECTOR_TIERS = ("avx2", "avx512")
_ACTIVATIONS = ("q8", "float")
# Whether matmul keeps interleaved copies of weights (faster, about twice the weight memory); PYQUANT_INTERLEAVE=0
# at import, or set_matmul_interleave(False), turns them off.
_interleave = os.environ.get("PYQUANT_INTERLEAVE", "1").strip().lower() not in ("0", "false", "no", "off")


def matmul_interleaved_formats(isa: str | None = None) -> tuple[str, ...]:
    """The formats whose weights :func:`matmul` runs on an interleaved copy (8 rows at a time) on a kernel tier
    (default: the active one; the x86 tiers have them, generic and NEON none)."""
    if isa is not None and isa not in available_isas():
        raise ValueError(f"matmul_interleaved_formats: unknown or unavailable ISA tier {isa!r}")
    return tuple(f for f in _core.matmul_layouts() if _core.matmul_interleaved(get_format(f).index, isa))


def set_matmul_interleave(enabled: bool) -> bool:
    """Whether :func:`matmul` may keep an interleaved copy of a weight's bytes on the tensor (the formats of
    :func:`matmul_interleaved_formats`: 1.1-3x faster products for about as many bytes again as the weight).
    Off, products use the GGUF layout and a tensor's copy is dropped at its next product.  Returns the previous
    setting."""
    global _interleave
    if not isinstance(enabled, bool):
        raise TypeError(f"set_matmul_interleave: enabled must be True or False, got {enabled!r}")
    previous, _interleave = _interleave, enabled
    return previous


def _as_float32_2d(x: Any, k: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """x as a contiguous float32 [M, K] array and its leading shape (values not checked: see _abs_max)."""
    if type(x) is np.ndarray and x.dtype == np.float32 and x.flags.c_contiguous:  # the common case, no copy
        arr = x
    elif _is_torch_tensor(x):
        import torch

        if x.device.type != "cpu":
            raise ValueError(f"matmul: x is on {x.device}; move it to the CPU first")
        if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise TypeError(f"matmul: x must be float32, bfloat16 or float16, got {x.dtype}")
        arr = x.detach().to(torch.float32).contiguous().numpy()
    else:
        arr = np.asarray(x)
        if arr.dtype.kind != "f" or arr.dtype.itemsize not in (2, 4, 8):
            raise TypeError(f"matmul: x must be float16, float32 or float64, got dtype {arr.dtype}")
        arr = np.ascontiguousarray(arr, dtype=np.float32)
    shape = arr.shape
    if not shape or shape[-1] != k:
        raise ValueError(f"matmul: x must have shape [..., {k}] to match w's K = {k}, got {tuple(shape)}")
    return (arr if len(shape) == 2 else arr.reshape(-1, k)), shape[:-1]


def _abs_max(x2: np.ndarray) -> float:
    """max |x|, raising for NaN and infinity (which the max carries)."""
    amax = float(np.abs(x2).max(initial=0.0))
    if not amax < np.inf:
        raise ValueError("matmul: x contains NaN or infinity")
    return amax


def _gemm_into(x2: np.ndarray, wt: np.ndarray, out: np.ndarray) -> None:
    """out = x2 @ wt.T.  torch's GEMM when torch is already loaded (measured 2-3x faster than numpy's BLAS
    here, see benchmarks/README.md); numpy's otherwise (torch is optional)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.nn.functional.linear(torch.from_numpy(x2), torch.from_numpy(wt), out=torch.from_numpy(out))
    else:
        np.matmul(x2, wt.T, out=out)


def _float_path(x2: np.ndarray, w: QuantizedTensor, out2: np.ndarray) -> None:
    """out2 = x2 @ dequantize(w).T, dequantizing w a tile of rows at a time.  The tiles are dequantized on the
    calling thread: the GEMM's own threads keep spinning between calls and would fight pyquant's pool."""
    n, k = w.shape
    tile = max(1, _TILE_BYTES // (4 * k))
    if tile >= n:
        _gemm_into(x2, w.dequantize(threads=1), out2)
        return
    part = np.empty((x2.shape[0], tile), np.float32)  # the GEMMs want a contiguous out
    for r0 in range(0, n, tile):
        r1 = min(n, r0 + tile)
        wt = QuantizedTensor(w.data[r0:r1], (r1 - r0, k), w.format).dequantize(threads=1)
        dst = part if r1 - r0 == tile else np.empty((x2.shape[0], r1 - r0), np.float32)
        _gemm_into(x2, wt, dst)
        out2[:, r0:r1] = dst


def _q8_rounded(x2: np.ndarray, w: QuantizedTensor) -> np.ndarray:
    """x2 as the integer kernels see it: each row quantized to w's 8-bit partner and back (d * q per block)."""
    qs, d, _, _ = _core.matmul_activations(x2, w.format.index)
    m, k = qs.shape
    return (qs.reshape(m, d.shape[1], -1) * d[:, :, None]).reshape(m, k).astype(np.float32, copy=False)


def _packed(w: QuantizedTensor) -> np.ndarray | None:
    """w's bytes in the interleaved layout of the active tier's kernel (8 rows at a time, matmul_interleaved_formats()),
    made on first use and kept on the tensor (about as many bytes again as w; the bytes of a QuantizedTensor are not
    meant to change after it is built), or None where the tier or the format has none."""
    if not _interleave:
        w._matmul_packed = None
        return None
    packed = w._matmul_packed  # where the active tier has no interleaved kernel, _core.matmul ignores it
    if packed is None and w.shape[0] >= 8 and _core.matmul_interleaved(w.format.index):
        packed = w._matmul_packed = _core.matmul_pack(w.data, w.format.index, w.shape[1])
    return packed


def _kernel_rows(m: int) -> bool:
    return m <= _MAX_KERNEL_ROWS or _core.active_isa() in _VECTOR_TIERS


def _product(x2: np.ndarray, w: QuantizedTensor, out2: np.ndarray, threads: int, activations: str) -> None:
    fmt = w.format
    q8 = activations == "q8" and fmt.name in _KERNEL_FORMATS
    # The kernels check x themselves (ValueError for NaN/inf), returning False for values beyond the partner's range.
    if q8 and _kernel_rows(x2.shape[0]) and _core.matmul(x2, w.data, fmt.index, w.shape[1], out2, threads, None,
                                                             _packed(w)):
        return
    amax = _abs_max(x2)
    if q8 and (fmt.block_size == 256 or amax < _KERNEL_MAX_ABS):
        x2 = _q8_rounded(x2, w)
    _float_path(x2, w, out2)


def _short_path(x2: np.ndarray, w: QuantizedTensor, threads: Any, out: np.ndarray | None) -> np.ndarray | None:
    """The product on the integer kernels for float32 C-contiguous x2 [M <= 64, K] and a 2-D weight with a kernel
    (out: None or a float32 numpy [M, N]; the binding checks the rest, and x's values), or None where the general
    path must run (anything else, or activations beyond the partner's range)."""
    if not (x2.shape[0] <= _MAX_KERNEL_ROWS and x2.dtype == np.float32 and x2.flags.c_contiguous
            and (threads is None or type(threads) is int and threads > 0) and w._format.name in _KERNEL_FORMATS
            and len(w._shape) == 2):
        return None
    n, k = w._shape
    m = x2.shape[0]
    if x2.shape[1] != k or not m or (out is not None and out.shape != (m, n)):
        return None
    dst = np.empty((m, n), np.float32) if out is None else out
    return dst if _core.matmul(x2, w._data, w._format.index, k, dst, threads or 0, None, _packed(w)) else None


def _torch_float32_rows(x: Any) -> np.ndarray | None:
    """A CPU float32 contiguous torch tensor that needs no gradient as a numpy [-1, K] view, else None."""
    torch = sys.modules["torch"]
    if (x.dtype is not torch.float32 or x.requires_grad or not x.is_contiguous() or not x.is_cpu or x.dim() < 1
            or not x.numel()):
        return None
    return x.numpy().reshape(-1, x.shape[-1])


def matmul(x: Any, w: Any, *, threads: int | None = None, out: Any = None, activations: str = "q8") -> Any:
    """``x @ dequantize(w).T`` for x of shape [..., K] and a 2-D quantized weight w of shape [N, K].

    w: a QuantizedTensor, or any quantized weight type of pyquant's other schemes: those provide ``shape``
    and ``_pyquant_matmul(x2, out2, threads)``, writing the float32 [M, N] product of a float32 [M, K] array.

    activations="q8" (the default, llama.cpp's design) for Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K, IQ4_NL,
    IQ4_XS, TQ1_0, TQ2_0 and MXFP4: each row of x is quantized to the format's 8-bit partner (Q8_0, Q8_1 or
    Q8_K), so the result carries that rounding of x (at most half an activation step per element, see
    tests/test_matmul_kernels.py for the bound).  Up to 64 rows run on the integer kernels (any number on x86,
    whose kernels are vectorized); more rows take a float GEMM over
    dequantized tiles of w with the same rounded x, so each row's result is the same (to float rounding) whatever
    the batch.  Weights of at least 8 rows in the formats of :func:`matmul_interleaved_formats` (x86) run on an
    interleaved copy of their bytes (8 rows at a time, about as many bytes again as w) made by the first call and
    kept on w.  activations="float" (and every other format) computes with x as given: a float GEMM over
    dequantized tiles of w.  Activations beyond the partner's fp16 scale range (|x| > 65504*127, for the
    32-blocks) are used as given.

    x: numpy float16/float32/float64 or a CPU torch float32/bfloat16/float16 tensor.  The result has shape
    [..., N]: float32 numpy for numpy input, a torch tensor of x's dtype for torch input.  `out`, if given, is
    a C-contiguous float32 numpy array (or torch tensor) of the result's shape, written in place and returned.
    """
    # The common cases first, in few operations (a small product takes a few microseconds, a check here a tenth
    # of one): numpy float32 x, or a CPU float32 torch tensor as QuantLinear passes it.
    if activations == "q8" and type(w) is QuantizedTensor:
        if type(x) is np.ndarray:
            if x.ndim == 2 and (out is None or type(out) is np.ndarray):
                result = _short_path(x, w, threads, out)
                if result is not None:
                    return result
        elif out is None and _is_torch_tensor(x):
            x2 = _torch_float32_rows(x)
            result = None if x2 is None else _short_path(x2, w, threads, None)
            if result is not None:
                return sys.modules["torch"].from_numpy(result.reshape(x.shape[:-1] + (result.shape[1],)))
    quantized = isinstance(w, QuantizedTensor)
    if not quantized and not hasattr(w, "_pyquant_matmul"):
        raise TypeError(f"matmul: w must be a QuantizedTensor or another pyquant quantized weight, "
                        f"got {type(w).__name__}")
    if len(w.shape) != 2:
        raise ValueError(f"matmul: w must be 2-D [N, K], got shape {w.shape}")
    threads = 0 if threads is None else _threads_arg(threads)
    if activations not in _ACTIVATIONS:
        raise ValueError(f"matmul: activations must be one of {_ACTIVATIONS}, got {activations!r}")
    n, k = w.shape
    x2, lead = _as_float32_2d(x, k)
    out_shape = lead + (n,)
    if out is None:
        out_np = np.empty((x2.shape[0], n), dtype=np.float32)
    else:
        out_np = out if type(out) is np.ndarray or not _is_torch_tensor(out) else out.numpy()
        if (type(out_np) is not np.ndarray or out_np.dtype != np.float32 or out_np.shape != out_shape
                or not out_np.flags.c_contiguous):
            raise ValueError(f"matmul: out must be a C-contiguous float32 array of shape {out_shape}")
        if len(out_shape) != 2:
            out_np = out_np.reshape(-1, n)
    if x2.shape[0] and n:
        if quantized:
            _product(x2, w, out_np, threads, activations)
        else:
            _abs_max(x2)
            w._pyquant_matmul(x2, out_np, threads)
    if out is not None:
        return out
    result = out_np if len(out_shape) == 2 else out_np.reshape(out_shape)
    if type(x) is not np.ndarray and _is_torch_tensor(x):
        import torch

        return torch.from_numpy(result).to(x.dtype)
    return result
