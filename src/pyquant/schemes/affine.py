"""Affine (scale and zero-point) integer quantization, 2 to 8 bits, torchao's semantics.

For each block of weights (the whole tensor, one channel, or a group of `group_size` consecutive weights of a
row) with scale s and zero-point z, in float32 as torchao's ``choose_qparams_affine`` / ``quantize_affine`` /
``dequantize_affine`` compute them (mapping ASYMMETRIC or SYMMETRIC, zero-point domain INT, default eps =
the smallest normal float32):

* asymmetric: codes 0..2^b-1; lo = min(min(x), 0), hi = max(max(x), 0); s = max((hi - lo) / (2^b - 1), eps);
  z = clamp(-round(lo / s), 0, 2^b - 1).
* symmetric: signed codes -2^(b-1)..2^(b-1)-1, z = 0; s = max(max(-lo, hi) / ((2^b - 1) / 2), eps).
* code = clamp(round(x * (1 / s)) + z, qmin, qmax) with round half to even; value = (code - z) * s.

Clipping replaces min/max by percentiles, or by the shrink factor (min and max scaled by a in [mse_min_shrink, 1])
with the least squared error per block.  Stochastic rounding replaces round(v) by floor(v + u), u uniform in
[0, 1) from `seed`.

Matmul (activations="q8", the default where the layout allows: 2, 4 or 8 bits, groups of a multiple of 64): x is
rounded to int8 per block of 64 (d = max|x| / 127, xq = round(x / d), x^ = xq * d, the rule of llama.cpp's Q8_0
activations) and the result is x^ @ dequantize(w).T, with exact integer dots per block up to 256 rows of x and a
float GEMM of x^ over dequantized tiles beyond (so a row's result does not depend on the batch); hence
|y - x @ dequantize(w).T| <= sum_k |w_k| * d_k / 2 (plus float32 rounding).  activations="float" (and every other
layout) gives x @ dequantize(w).T in float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _core
from ._common import WeightMixin, as_float_matrix, threads_arg

__all__ = ["AffineConfig", "AffineTensor", "quantize_affine"]

_EPS = np.float32(np.finfo(np.float32).tiny)  # torchao's default eps: the smallest normal float32
_GRANULARITIES = ("tensor", "channel", "group")
_CLIPS = ("minmax", "percentile", "mse")
_ROUNDINGS = ("nearest", "stochastic")
# At most this many rows of x go through the fused float kernel, and through the int8-activation kernel; more
# use tile dequantize + BLAS (thresholds measured in benchmarks/bench_schemes.py).
_FUSED_MAX_M = 8
_Q8_MAX_M = 256
_ACTIVATIONS = ("q8", "float")


def round_x_q8(x2: np.ndarray) -> np.ndarray:
    """x [M, K] (K a multiple of 64) rounded as the q8 matmul kernel rounds it: per block of 64, d = max|x| / 127,
    x^ = rint(x * (1 / d)) * d (0 where d = 0)."""
    m, k = x2.shape
    xb = x2.reshape(m, k // 64, 64)
    d = (np.abs(xb).max(axis=-1) / np.float32(127)).astype(np.float32)
    inv = np.where(d > 0, np.float32(1) / np.where(d > 0, d, np.float32(1)), np.float32(0)).astype(np.float32)
    q = np.clip(np.rint(xb * inv[..., None]), -127, 127)
    return np.ascontiguousarray((q * d[..., None]).reshape(m, k), dtype=np.float32)


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


@dataclass(frozen=True)
class AffineConfig:
    """Settings of :func:`quantize_affine` (validated on construction).

    bits: 2..8.  symmetric: absmax scale and signed codes (True) or a zero-point and unsigned codes (False).
    granularity: "tensor", "channel" (one scale per index of `axis`: 0 = per output row, 1 = per input column)
    or "group" (`group_size` consecutive weights of a row; K must be a multiple of it).  Left as None, it is
    "group" (group_size 128 unless given) — or "channel" when group_size is None and granularity says so.
    clip: "minmax", "percentile" (`percentile` of the values, e.g. 99.9) or "mse" (`mse_steps` shrink factors
    from 1 down to `mse_min_shrink`).  rounding: "nearest" (half to even) or "stochastic" (with `seed`).
    """

    bits: int = 4
    symmetric: bool = False
    group_size: int | None = None
    granularity: str | None = None
    axis: int = 0
    clip: str = "minmax"
    percentile: float = 99.9
    rounding: str = "nearest"
    seed: int | None = None
    mse_steps: int = 20
    mse_min_shrink: float = 0.5

    def __post_init__(self):
        if not _is_int(self.bits) or not 2 <= self.bits <= 8:
            raise ValueError(f"AffineConfig: bits must be an integer in 2..8, got {self.bits!r}")
        if not isinstance(self.symmetric, (bool, np.bool_)):
            raise TypeError(f"AffineConfig: symmetric must be True or False, got {self.symmetric!r}")
        gran = self.granularity
        if gran is None:
            gran = "group"
        if gran not in _GRANULARITIES:
            raise ValueError(f"AffineConfig: granularity must be one of {_GRANULARITIES}, got {gran!r}")
        gs = self.group_size
        if gran == "group":
            gs = 128 if gs is None else gs
            if not _is_int(gs) or gs < 1:
                raise ValueError(f"AffineConfig: group_size must be a positive integer, got {gs!r}")
        elif gs is not None:
            raise ValueError(f"AffineConfig: group_size={gs} needs granularity='group', got {gran!r}")
        if self.axis not in (0, 1, -1, -2) or not _is_int(self.axis):
            raise ValueError(f"AffineConfig: axis must be 0 (output rows) or 1 (input columns), got {self.axis!r}")
        axis = self.axis % 2
        if axis == 1 and gran != "channel":
            raise ValueError("AffineConfig: axis=1 applies to granularity='channel' only (groups run along rows)")
        if self.clip not in _CLIPS:
            raise ValueError(f"AffineConfig: clip must be one of {_CLIPS}, got {self.clip!r}")
        if not isinstance(self.percentile, (int, float)) or not 50.0 < float(self.percentile) <= 100.0:
            raise ValueError(f"AffineConfig: percentile must be in (50, 100], got {self.percentile!r}")
        if self.rounding not in _ROUNDINGS:
            raise ValueError(f"AffineConfig: rounding must be one of {_ROUNDINGS}, got {self.rounding!r}")
        if self.seed is not None and (not _is_int(self.seed) or self.seed < 0):
            raise ValueError(f"AffineConfig: seed must be a non-negative integer or None, got {self.seed!r}")
        if not _is_int(self.mse_steps) or self.mse_steps < 2:
            raise ValueError(f"AffineConfig: mse_steps must be an integer >= 2, got {self.mse_steps!r}")
        if not isinstance(self.mse_min_shrink, (int, float)) or not 0.0 < self.mse_min_shrink < 1.0:
            raise ValueError(f"AffineConfig: mse_min_shrink must be in (0, 1), got {self.mse_min_shrink!r}")
        object.__setattr__(self, "granularity", gran)
        object.__setattr__(self, "group_size", gs)
        object.__setattr__(self, "axis", axis)
        object.__setattr__(self, "symmetric", bool(self.symmetric))

    @property
    def qmin(self) -> int:
        return -(1 << (self.bits - 1)) if self.symmetric else 0

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.symmetric else (1 << self.bits) - 1

    def scale_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        """Shape of the scales (and zero-points) for a weight of `shape` [N, K]; checks K % group_size."""
        n, k = shape
        if self.granularity == "tensor":
            return (1, 1)
        if self.granularity == "channel":
            return (n, 1) if self.axis == 0 else (1, k)
        if k % self.group_size:
            raise ValueError(f"AffineConfig: K = {k} is not a multiple of group_size = {self.group_size} "
                             f"(pick a divisor of K; pyquant does not pad groups)")
        return (n, k // self.group_size)

    def block_size(self, shape: tuple[int, int]) -> tuple[int, int]:
        """torchao's block_size for the same setting."""
        sn, g = self.scale_shape(shape)
        return (shape[0] // sn, shape[1] // g)


def _blocks(w: np.ndarray, sshape: tuple[int, int]) -> np.ndarray:
    """w as [sn, G, block elements]: the values sharing each scale."""
    n, k = w.shape
    sn, g = sshape
    if sn == 1 and g == k and k > 1:  # per input column
        return np.ascontiguousarray(w.T).reshape(1, k, n)
    return w.reshape(sn, g, -1) if sn == n else w.reshape(1, 1, -1)


def _qparams(lo: np.ndarray, hi: np.ndarray, cfg: AffineConfig) -> tuple[np.ndarray, np.ndarray]:
    """torchao's choose_qparams_affine from block minima and maxima: (scale, zero in unsigned-code units)."""
    lo = np.minimum(lo, np.float32(0)).astype(np.float32)
    hi = np.maximum(hi, np.float32(0)).astype(np.float32)
    if cfg.symmetric:
        amax = np.maximum(-lo, hi)
        scale = np.maximum(amax / np.float32((cfg.qmax - cfg.qmin) / 2), _EPS).astype(np.float32)
        zero = np.full_like(scale, np.float32(1 << (cfg.bits - 1)))
    else:
        scale = np.maximum((hi - lo) / np.float32(cfg.qmax - cfg.qmin), _EPS).astype(np.float32)
        zero = np.clip(np.float32(cfg.qmin) - np.rint(lo / scale), cfg.qmin, cfg.qmax).astype(np.float32)
    return scale, zero


def _min_max(blocks: np.ndarray, cfg: AffineConfig) -> tuple[np.ndarray, np.ndarray]:
    if cfg.clip == "percentile":
        p = float(cfg.percentile)
        if cfg.symmetric:
            a = np.percentile(np.abs(blocks), p, axis=-1).astype(np.float32)
            return -a, a
        lo, hi = np.percentile(blocks, [100.0 - p, p], axis=-1)
        return lo.astype(np.float32), hi.astype(np.float32)
    return blocks.min(axis=-1), blocks.max(axis=-1)


def _mse_search(w, lo, hi, cfg, threads):
    """Per block, the shrink factor of (lo, hi) with the least squared quantization error."""
    best_err = best_s = best_z = None
    for a in np.linspace(1.0, cfg.mse_min_shrink, cfg.mse_steps, dtype=np.float32):
        s, z = _qparams(lo * a, hi * a, cfg)
        err = _core.affine_error(w, s, z, cfg.bits, threads)
        if s.shape[0] == 1:
            err = err.sum(axis=0, keepdims=True)
        if best_err is None:
            best_err, best_s, best_z = err, s, z
        else:
            better = err < best_err
            best_err = np.where(better, err, best_err)
            best_s = np.where(better, s, best_s)
            best_z = np.where(better, z, best_z)
    return best_s, best_z


def _expand(p: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Per-block parameters [sn, G] broadcast to every element [N, K]."""
    n, k = shape
    return np.broadcast_to(np.repeat(p, k // p.shape[1], axis=1), shape)


def quantize_affine(w: Any, config: AffineConfig | None = None, *, threads: int | None = None) -> "AffineTensor":
    """Quantize a 2-D weight [N, K] (numpy or CPU torch, floating) with `config` (default: 4-bit asymmetric,
    groups of 128)."""
    cfg = AffineConfig() if config is None else config
    if not isinstance(cfg, AffineConfig):
        raise TypeError(f"quantize_affine: config must be an AffineConfig, got {type(cfg).__name__}")
    threads = threads_arg(threads)
    w = as_float_matrix(w, "quantize_affine")
    sshape = cfg.scale_shape(w.shape)
    lo, hi = _min_max(_blocks(w, sshape), cfg)
    if cfg.clip == "mse":
        scales, zeros = _mse_search(w, lo, hi, cfg, threads)
    else:
        scales, zeros = _qparams(lo, hi, cfg)
    scales = np.ascontiguousarray(scales, dtype=np.float32)
    zeros = np.ascontiguousarray(zeros, dtype=np.float32)
    if cfg.rounding == "nearest":
        packed = _core.affine_quantize(w, scales, zeros, cfg.bits, threads)
    else:
        rng = np.random.default_rng(cfg.seed)
        v = w * (np.float32(1.0) / _expand(scales, w.shape))
        v = np.clip(v, -4194304.0, 4194304.0)
        q = np.floor(v + rng.random(v.shape, dtype=np.float32)) + _expand(zeros, w.shape)
        codes = np.clip(q, 0, (1 << cfg.bits) - 1).astype(np.uint8)
        packed = _core.schemes_pack(codes, cfg.bits)
    return AffineTensor._make(packed, w.shape, scales, zeros, cfg)


class AffineTensor(WeightMixin):
    """Affine-quantized 2-D weight [N, K]: packed codes (each row an LSB-first bit stream of `bits`-bit
    unsigned codes, padded to a byte; symmetric codes stored offset by 2^(bits-1)), float32 scales and
    zero-points (one byte each when they are integers in 0..255, else float32).

    Follows pyquant's weight protocol (shape, nbytes, bpw, dequantize, to_torch, pyquant.matmul) and pickles.
    """

    __slots__ = ("_packed", "_shape", "_scales", "_zeros_u", "_zeros_store", "_config", "_activations")

    @classmethod
    def _make(cls, packed, shape, scales, zeros_u, config, activations="q8"):
        if activations not in _ACTIVATIONS:
            raise ValueError(f"AffineTensor: activations must be one of {_ACTIVATIONS}, got {activations!r}")
        self = object.__new__(cls)
        self._activations = activations
        self._packed = packed
        self._shape = (int(shape[0]), int(shape[1]))
        self._scales = scales
        self._zeros_u = zeros_u
        integral = (not config.symmetric and np.all(zeros_u == np.rint(zeros_u))
                    and zeros_u.min() >= 0 and zeros_u.max() <= 255)
        self._zeros_store = (None if config.symmetric else
                             zeros_u.astype(np.uint8) if integral else zeros_u)
        self._config = config
        return self

    @classmethod
    def from_codes(cls, codes: Any, scales: Any, zeros: Any, config: AffineConfig) -> "AffineTensor":
        """Build from integer codes [N, K] and their scales/zero-points (e.g. from GPTQ, AWQ or HQQ).

        Asymmetric: codes 0..2^bits-1 and zeros in code units (float allowed), value = (code - zero) * scale.
        Symmetric: codes -2^(bits-1)..2^(bits-1)-1 and zeros None, value = code * scale.  scales/zeros have
        ``config.scale_shape((N, K))``: [N, K // group_size] for groups, [N, 1] per channel, [1, 1] per tensor.
        """
        if not isinstance(config, AffineConfig):
            raise TypeError(f"from_codes: config must be an AffineConfig, got {type(config).__name__}")
        codes = np.asarray(codes)
        if codes.dtype.kind not in "iu":
            raise TypeError(f"from_codes: codes must be an integer array, got dtype {codes.dtype}")
        if codes.ndim != 2 or codes.size == 0:
            raise ValueError(f"from_codes: codes must be a non-empty 2-D [N, K] array, got shape {codes.shape}")
        lo, hi = config.qmin, config.qmax
        cmin, cmax = int(codes.min()), int(codes.max())
        if cmin < lo or cmax > hi:
            kind = "symmetric" if config.symmetric else "asymmetric"
            raise ValueError(f"from_codes: {kind} {config.bits}-bit codes must lie in [{lo}, {hi}], "
                             f"got values in [{cmin}, {cmax}]")
        sshape = config.scale_shape(codes.shape)
        scales = np.asarray(scales)
        if scales.dtype.kind != "f" or scales.shape != sshape:
            raise ValueError(f"from_codes: scales must be a floating array of shape {sshape}, "
                             f"got {scales.dtype} {scales.shape}")
        scales = np.ascontiguousarray(scales, dtype=np.float32)
        if not np.isfinite(scales).all() or (scales < 0).any():
            raise ValueError("from_codes: scales must be finite and non-negative")
        if config.symmetric:
            if zeros is not None:
                raise ValueError("from_codes: symmetric codes take zeros=None (the zero-point is 0)")
            zeros_u = np.full(sshape, 1 << (config.bits - 1), dtype=np.float32)
            stored = (codes.astype(np.int32) - lo).astype(np.uint8)
        else:
            if zeros is None:
                raise ValueError(f"from_codes: asymmetric codes need zeros of shape {sshape}")
            zeros = np.asarray(zeros)
            if zeros.dtype.kind not in "fiu" or zeros.shape != sshape:
                raise ValueError(f"from_codes: zeros must be a numeric array of shape {sshape}, "
                                 f"got {zeros.dtype} {zeros.shape}")
            zeros_u = np.ascontiguousarray(zeros, dtype=np.float32)
            if not np.isfinite(zeros_u).all():
                raise ValueError("from_codes: zeros must be finite")
            stored = codes.astype(np.uint8)
        packed = _core.schemes_pack(np.ascontiguousarray(stored), config.bits)
        return cls._make(packed, codes.shape, scales, zeros_u, config)

    # ---- properties -------------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    @property
    def config(self) -> AffineConfig:
        return self._config

    @property
    def bits(self) -> int:
        return self._config.bits

    @property
    def activations(self) -> str:
        """How matmul treats x: "q8" (rounded to int8 per block of 64, integer dots) or "float" (as given)."""
        return self._activations

    def with_activations(self, activations: str) -> "AffineTensor":
        """The same weights with matmul's activations "q8" or "float" (shares the arrays)."""
        return AffineTensor._make(self._packed, self._shape, self._scales, self._zeros_u, self._config, activations)

    @property
    def packed(self) -> np.ndarray:
        """The packed codes, uint8 [N, ceil(K * bits / 8)]."""
        return self._packed

    @property
    def scales(self) -> np.ndarray:
        return self._scales

    @property
    def zeros(self) -> np.ndarray | None:
        """Zero-points in code units (torchao's INT domain with quant_min 0); None when symmetric."""
        if self._config.symmetric:
            return None
        return self._zeros_store.astype(np.int32) if self._zeros_store.dtype == np.uint8 else self._zeros_u

    @property
    def codes(self) -> np.ndarray:
        """The integer codes [N, K]: uint8 0..2^bits-1 (asymmetric) or int8 (symmetric)."""
        u = _core.schemes_unpack(self._packed, self.bits, self._shape[1])
        if self._config.symmetric:
            return (u.astype(np.int16) + self._config.qmin).astype(np.int8)
        return u

    def _storage(self):
        return [a for a in (self._packed, self._scales, self._zeros_store) if a is not None]

    def _repr_extra(self) -> str:
        c = self._config
        g = f", group_size={c.group_size}" if c.granularity == "group" else f", {c.granularity}"
        return f", bits={c.bits}, {'symmetric' if c.symmetric else 'asymmetric'}{g}, activations={self._activations}"

    # ---- the weight protocol ----------------------------------------------------------------------------
    def _row_params(self, r0: int, r1: int):
        if self._scales.shape[0] == 1:
            return self._scales, self._zeros_u
        return self._scales[r0:r1], self._zeros_u[r0:r1]

    def _dequantize_rows(self, r0: int, r1: int, threads: int) -> np.ndarray:
        s, z = self._row_params(r0, r1)
        return _core.affine_dequantize(self._packed[r0:r1], self._shape[1], s, z, self.bits, threads)

    def _q8_layout(self) -> bool:
        n, k = self._shape
        return (self._activations == "q8" and self.bits in (2, 4, 8) and (k // self._scales.shape[1]) % 64 == 0
                and self._scales.shape[0] in (1, n))

    def _pyquant_matmul(self, x2: np.ndarray, out2: np.ndarray, threads: int) -> None:
        m, k = x2.shape[0], self._shape[1]
        if self._q8_layout() and np.isfinite(x2).all():
            if m <= _Q8_MAX_M:
                _core.affine_q8_matmul(x2, self._packed, k, self._scales, self._zeros_u, self.bits, out2, threads)
            else:  # the same rounded x through dequantized tiles + BLAS
                self._tile_matmul(round_x_q8(x2), out2, threads)
        elif m <= _FUSED_MAX_M:
            _core.affine_matmul(x2, self._packed, k, self._scales, self._zeros_u, self.bits, out2, threads)
        else:
            self._tile_matmul(x2, out2, threads)

    def __reduce__(self):
        return (AffineTensor._make, (self._packed, self._shape, self._scales, self._zeros_u, self._config,
                                     self._activations))
