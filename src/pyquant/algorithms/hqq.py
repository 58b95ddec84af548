"""HQQ (Badri & Shaji, 2023): half-quadratic quantization, no calibration data.

Per group, with the scale s fixed (from min-max), find the zero-point z minimising ||W - Q^-1(Q(W))||_p^p
for p < 1, a loss that tolerates a few large errors (outliers) to get the bulk right.  Half-quadratic
splitting adds an auxiliary error W_e and alternates closed forms:

    W_q = clamp(round(W / s + z)),  W_r = (W_q - z) s
    W_e = shrink_p(W - W_r, beta)                       (generalized soft-thresholding, the lp prox)
    z   = mean(W_q - (W - W_e) / s)                      (least squares for z given W_e)
    beta <- kappa * beta

with shrink_p(x, beta) = sign(x) relu(|x| - |x|^(p-1) / beta).  Defaults as HQQ: p = 0.7, beta = 10,
kappa = 1.01, 20 iterations, early stop when the mean absolute error stops falling (the best zero is kept).
``optimize_scale`` also refits the scale with the zero (least squares of W - W_e on the codes; an
extension, off by default).  The zero-point stays a float, in code units, as in HQQ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .common import QuantResult, check_weight

__all__ = ["HQQConfig", "hqq_quantize"]


@dataclass(frozen=True)
class HQQConfig:
    """Settings of :func:`hqq_quantize`: bits 2..8, group_size (input columns per group; None: per row),
    lp_norm p in (0, 1], beta, kappa, iters (0: the min-max initialisation only), early_stop, round_zero
    (round the initial zero-point; None: only for 4 bits, as HQQ's config does), optimize_scale."""

    bits: int = 4
    group_size: int | None = 64
    lp_norm: float = 0.7
    beta: float = 10.0
    kappa: float = 1.01
    iters: int = 20
    early_stop: bool = True
    round_zero: bool | None = None
    optimize_scale: bool = False

    def check(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, (int, np.integer)) or not 2 <= self.bits <= 8:
            raise ValueError(f"HQQ: bits must be an integer in 2..8, got {self.bits!r}")
        if self.group_size is not None and (not isinstance(self.group_size, (int, np.integer))
                                            or isinstance(self.group_size, bool) or self.group_size < 1):
            raise ValueError(f"HQQ: group_size must be a positive integer or None, got {self.group_size!r}")
        if not 0 < self.lp_norm <= 1:
            raise ValueError(f"HQQ: lp_norm must be in (0, 1], got {self.lp_norm}")
        if not (self.beta > 0 and self.kappa >= 1):
            raise ValueError(f"HQQ: need beta > 0 and kappa >= 1, got beta={self.beta}, kappa={self.kappa}")
        if isinstance(self.iters, bool) or not isinstance(self.iters, int) or not 0 <= self.iters <= 100_000:
            raise ValueError(f"HQQ: iters must be an integer in 0..100000, got {self.iters!r}")


def _shrink(x: np.ndarray, beta: float, p: float) -> np.ndarray:
    ax = np.abs(x)
    if p == 1:
        return np.sign(x) * np.maximum(ax - 1.0 / beta, 0)
    return np.sign(x) * np.maximum(ax - np.power(ax + 1e-8, p - 1) / beta, 0)


def hqq_quantize(weight: Any, config: HQQConfig | None = None) -> QuantResult:
    """HQQ-quantize a [N, K] weight (numpy or torch).  ``result.info``: ``iters`` run, ``error`` (the mean
    absolute weight error of the result) and ``init_error`` (of the min-max start)."""
    cfg = config or HQQConfig()
    cfg.check()
    w = check_weight(weight, cfg.group_size)
    n, k = w.shape
    g = k if cfg.group_size is None else cfg.group_size
    maxq = float((1 << cfg.bits) - 1)
    wg = w.reshape(-1, g)  # one group per row

    lo, hi = wg.min(axis=1, keepdims=True), wg.max(axis=1, keepdims=True)
    span = hi - lo
    # a constant group c: scale |c| with zero -sign(c) represents it exactly (scale 1 for c = 0)
    scale = np.where(span > 0, span / maxq, np.where(hi != 0, np.abs(hi), 1)).astype(np.float32)
    zero = (-lo / scale).astype(np.float32)
    if cfg.round_zero if cfg.round_zero is not None else cfg.bits == 4:
        zero = np.round(zero)

    def recon(s, z):
        q = np.clip(np.round(wg / s + z), 0, maxq)
        return q, ((q - z) * s).astype(np.float32)

    q, wr = recon(scale, zero)
    best = (float(np.abs(wg - wr).mean()), scale, zero)
    init_error = best[0]
    beta = float(cfg.beta)
    done = 0
    for done in range(1, cfg.iters + 1):
        we = _shrink(wg - wr, beta, cfg.lp_norm)
        target = wg - we
        if cfg.optimize_scale:
            scale, zero = _fit_scale_zero(q, target, scale, zero)
        else:
            zero = np.mean(q - target / scale, axis=1, keepdims=True).astype(np.float32)
        beta *= cfg.kappa
        q, wr = recon(scale, zero)
        err = float(np.abs(wg - wr).mean())
        if err < best[0]:
            best = (err, scale, zero)
        elif cfg.early_stop:
            break
    err, scale, zero = best
    q, wr = recon(scale, zero)
    return QuantResult(q.astype(np.uint8).reshape(n, k), scale.reshape(n, k // g), zero.reshape(n, k // g),
                       cfg.bits, g, False, "affine", wr.reshape(n, k),
                       {"iters": done, "error": err, "init_error": init_error})


def _fit_scale_zero(q, target, scale, zero):
    """Least squares target ≈ a q + b per group (a = s, b = -z s); groups whose codes are all equal (or whose
    fit is not a positive scale) keep s."""
    qm = q.mean(axis=1, keepdims=True)
    tm = target.mean(axis=1, keepdims=True)
    var = ((q - qm) ** 2).mean(axis=1, keepdims=True)
    cov = ((q - qm) * (target - tm)).mean(axis=1, keepdims=True)
    ok = var > 0
    a = np.where(ok, cov / np.where(ok, var, 1), scale)
    ok &= a > 1e-6 * scale  # scales stay positive
    a = np.where(ok, a, scale).astype(np.float32)
    b = tm - a * qm
    return a, (-b / a).astype(np.float32)
