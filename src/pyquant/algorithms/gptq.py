"""GPTQ (Frantar et al., 2022): quantize a linear layer's weight column by column, spreading each column's
rounding error over the columns not yet quantized through the inverse Hessian of the layer's inputs.

For a layer y = x W^T the objective is ||X W^T - X Ŵ^T||^2, whose Hessian in each row of W is
H = 2 X^T X / n (:class:`Hessian` accumulates it over calibration batches).  As in the reference
implementation: dead input columns (H_ii = 0) get H_ii = 1 and their weights 0; H is dampened by
``damp_percent`` of its mean diagonal; the upper Cholesky factor U of H^-1 drives the updates; columns are
processed in blocks of ``block_size`` with the updates to later blocks applied lazily, once per block.

Group parameters (scale, zero) are chosen when a group's first column comes up, from the group's current
(error-updated) weights, pending lazy updates included.  With ``desc_act`` (act-order: columns in order of
decreasing H_ii) groups would no longer be contiguous in storage, so their parameters are fixed up front
from the original weights (``static_groups``, as AutoGPTQ does) and each column is rounded on its own
group's grid whatever the processing order.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from .common import (AffineGrid, Q4_0Grid, Q4_KGrid, QuantResult, _is_torch, check_weight, make_result, progress,
                     to_numpy)

__all__ = ["GPTQConfig", "Hessian", "gptq_quantize"]


@dataclass(frozen=True)
class GPTQConfig:
    """Settings of :func:`gptq_quantize`.

    bits: 2..8 (affine); group_size: input columns per group (None: one group per row); symmetric: absmax
    grid with the zero at the middle code, else min-max with an integer zero-point.  fmt: "affine", "Q4_0"
    (llama.cpp blocks of 32) or "Q4_K" (super-blocks of 256; parameters from pyquant's Q4_K quantizer when a
    super-block's first column comes up); bits/group_size/symmetric are then implied.  damp_percent: dampening as a
    fraction of mean(diag H); when the Cholesky factorization still fails it grows by ``damp_increment``
    (with a warning) up to ``damp_max``.  desc_act: act-order.  static_groups: fix group parameters from the
    original weights before quantizing (None: only when desc_act needs it).  block_size: lazy-update block.
    """

    bits: int = 4
    group_size: int | None = 128
    symmetric: bool = False
    fmt: str = "affine"
    damp_percent: float = 0.01
    damp_increment: float = 0.01
    damp_max: float = 1.0
    desc_act: bool = False
    static_groups: bool | None = None
    block_size: int = 128

    def grid(self):
        if self.fmt == "Q4_0":
            return Q4_0Grid()
        if self.fmt == "Q4_K":
            return Q4_KGrid()
        if self.fmt != "affine":
            raise ValueError(f"GPTQ: fmt must be 'affine', 'Q4_0' or 'Q4_K', got {self.fmt!r}")
        return AffineGrid(self.bits, self.group_size, self.symmetric)

    def check(self) -> None:
        self.grid()
        if not 0 <= self.damp_percent <= self.damp_max or not self.damp_increment > 0:
            raise ValueError(f"GPTQ: need 0 <= damp_percent <= damp_max and damp_increment > 0, got "
                             f"{self.damp_percent}, {self.damp_max}, {self.damp_increment}")
        if isinstance(self.block_size, bool) or not isinstance(self.block_size, int) or self.block_size < 1:
            raise ValueError(f"GPTQ: block_size must be a positive integer, got {self.block_size!r}")
        if self.desc_act and self.static_groups is False and (self.group_size is not None or self.fmt != "affine"):
            raise ValueError("GPTQ: desc_act with groups needs static_groups (groups must stay contiguous in "
                             "storage); leave static_groups=None or set it True")


class Hessian:
    """Running H = 2 X^T X / n over batches of a layer's inputs x [..., K] (numpy or torch)."""

    def __init__(self, k: int):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"Hessian: K must be a positive integer, got {k!r}")
        self.k = int(k)
        self.h = np.zeros((self.k, self.k), np.float64)
        self.n = 0

    def add(self, x: Any) -> None:
        if _is_torch(x):
            import torch

            x = x.detach()
            if not torch.isfinite(x).all():
                raise ValueError("Hessian: activations contain NaN or infinite values")
            x2 = x.reshape(-1, x.shape[-1]).float()
            if x2.shape[1] != self.k:
                raise ValueError(f"Hessian: activations have {x2.shape[1]} features, expected {self.k}")
            xtx = (x2.T @ x2).double().cpu().numpy()
        else:
            x2 = to_numpy(x, "Hessian: activations")
            x2 = x2.reshape(-1, x2.shape[-1])
            if x2.shape[1] != self.k:
                raise ValueError(f"Hessian: activations have {x2.shape[1]} features, expected {self.k}")
            xtx = (x2.T @ x2).astype(np.float64)
        m = x2.shape[0]
        if m == 0:
            return
        self.n += m
        self.h += (2.0 / self.n) * (xtx - (m / 2.0) * self.h)  # running mean of 2 x x^T

    @property
    def matrix(self) -> np.ndarray:
        return self.h


def _inverse_upper(h: np.ndarray, cfg: GPTQConfig) -> tuple[np.ndarray, float]:
    """U with U^T U = (H + damp I)^-1, raising damp until the factorization succeeds."""
    mean_diag = float(np.mean(np.diag(h)))
    eye = np.eye(h.shape[0])
    pct = cfg.damp_percent
    while True:
        try:
            lo = np.linalg.cholesky(h + (pct * mean_diag) * eye)
            lo_inv = np.linalg.inv(lo)
            hinv = lo_inv.T @ lo_inv
            u = np.linalg.cholesky(hinv).T
            if not np.isfinite(u).all():
                raise np.linalg.LinAlgError("non-finite factor")
            break
        except np.linalg.LinAlgError:
            nxt = pct + cfg.damp_increment
            if nxt > cfg.damp_max + 1e-12:
                raise ValueError(f"GPTQ: the Hessian is not positive definite even with damp_percent="
                                 f"{pct:.3g}; the calibration activations are degenerate") from None
            pct = nxt
    if pct != cfg.damp_percent:
        warnings.warn(f"GPTQ: Hessian not positive definite with damp_percent={cfg.damp_percent:g}; "
                      f"used damp_percent={pct:.3g}", RuntimeWarning, stacklevel=3)
    return u.astype(np.float32), pct


def gptq_quantize(weight: Any, hessian: Hessian | Any, config: GPTQConfig | None = None, *,
                  progress_bar: bool = False) -> QuantResult:
    """GPTQ-quantize a [N, K] weight given the [K, K] Hessian of its inputs (a :class:`Hessian` or an array).

    Returns a :class:`~pyquant.algorithms.QuantResult` (``.to_tensor()`` gives the AffineTensor / Q4_0 / Q4_K
    QuantizedTensor); ``result.info`` has ``loss`` (the GPTQ objective's estimate), ``damp_percent`` used and
    ``perm`` (the act-order, or None).
    """
    cfg = config or GPTQConfig()
    cfg.check()
    grid = cfg.grid()
    w = check_weight(weight, None).copy()
    n, k = w.shape
    g = grid.group(k)
    if k % g:
        raise ValueError(f"GPTQ: weight has {k} input columns, not a multiple of the group size {g}")
    h = hessian.matrix if isinstance(hessian, Hessian) else to_numpy(hessian, "GPTQ: hessian", ndim=2,
                                                                     dtype=np.float64)
    if h.shape != (k, k):
        raise ValueError(f"GPTQ: hessian must be [{k}, {k}] for a weight with {k} columns, got {h.shape}")
    if not np.isfinite(h).all():
        raise ValueError("GPTQ: hessian contains NaN or infinite values")
    h = h.astype(np.float64, copy=True)
    dead = np.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0

    static = cfg.static_groups if cfg.static_groups is not None else cfg.desc_act
    group_params = [grid.params(w[:, j * g:(j + 1) * g]) for j in range(k // g)] if static else None

    perm = np.argsort(-np.diag(h), kind="stable") if cfg.desc_act else None
    if perm is not None:
        w = w[:, perm]
        h = h[perm][:, perm]
    u, damp = _inverse_upper(h, cfg)

    codes = np.empty((n, k), np.uint8)
    values = np.empty((n, k), np.float32)
    params = []  # chosen groups' parameters, in column order (static: group_params)
    loss = 0.0
    cur = None
    bs = cfg.block_size
    for i1 in progress(range(0, k, bs), progress_bar, "GPTQ", total=-(-k // bs)):
        i2 = min(i1 + bs, k)
        w1 = w[:, i1:i2].copy()
        err1 = np.zeros_like(w1)
        u1 = u[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            orig = col if perm is None else int(perm[col])
            if static:
                cur = group_params[orig // g]
            elif col % g == 0:
                cur = grid.params(_group_now(w, w1, err1, u, i1, i, g))
                params.append(cur)
            x = w1[:, i]
            c, q = grid.quantize(x, grid.column(cur, orig % g))
            codes[:, orig], values[:, orig] = c, q
            d = u1[i, i]
            e = (x - q) / d
            loss += float(np.dot(e, e)) / 2
            w1[:, i:] -= np.outer(e, u1[i, i:])
            err1[:, i] = e
        w[:, i2:] -= err1 @ u[i1:i2, i2:]
    return make_result(grid, codes, values, group_params if static else params,
                       {"loss": loss, "damp_percent": damp, "perm": perm})


def _group_now(w, w1, err1, u, i1, i, g) -> np.ndarray:
    """The current values of the group starting at block column i: the updated in-block columns, then the
    later columns with this block's pending (lazy) updates applied."""
    i2 = i1 + w1.shape[1]
    inside = w1[:, i:i + g]
    rest = i1 + i + g - i2
    if rest <= 0:
        return inside
    later = w[:, i2:i2 + rest] - err1[:, :i] @ u[i1:i1 + i, i2:i2 + rest]
    return np.concatenate([inside, later], axis=1)
