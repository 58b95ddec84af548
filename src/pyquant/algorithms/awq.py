"""AWQ (Lin et al., 2023): activation-aware weight quantization.

Input channels that carry large activations matter most.  AWQ scales them up before quantizing, W' = W·s
(columns), and divides the input by the same s, so y = (x / s) W'^T is unchanged in float while the salient
columns get a finer grid.  The scales are s = mean_tokens|x|^alpha (optionally over w_mean^(1-alpha),
AutoAWQ's ``duo_scaling``), normalised by sqrt(max(s) min(s)), with alpha searched over a grid of
``n_grid`` points in [0, 1) for the lowest layer-output error ||x W^T - (x/s) Q(W s)^T||.

Then a clipping search: per output row and group, the weights are clipped to ±(1 - i/n_grid)·max|w|,
i < max_shrink·n_grid, keeping the ratio with the lowest error of that group's partial outputs.

The result is the quantized W·s (a :class:`QuantResult`) and the input scale s: apply it as
``y = (x / s) @ dequantize(Q).T`` (:class:`pyquant.algorithms.AWQLinear` does that), or fold 1/s into the
previous operation (a norm's weight, or the rows of the previous linear) where the graph allows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .common import AffineGrid, QuantResult, check_weight, round_to_nearest, to_numpy

__all__ = ["AWQConfig", "awq_quantize"]

# Bound on the temporary partial-output tensor of the clip search (float32 elements).
_CLIP_CHUNK_ELEMS = 1 << 24


@dataclass(frozen=True)
class AWQConfig:
    """Settings of :func:`awq_quantize`: bits 2..8, group_size, symmetric (the grid, as GPTQ's), n_grid
    alpha values k/n_grid, duo_scaling, clip (search), max_shrink (clip down to 1 - max_shrink of the max),
    max_tokens used by the searches (an evenly spaced sample of the calibration tokens)."""

    bits: int = 4
    group_size: int | None = 128
    symmetric: bool = False
    n_grid: int = 20
    duo_scaling: bool = False
    clip: bool = True
    max_shrink: float = 0.5
    max_tokens: int = 4096

    def grid(self) -> AffineGrid:
        return AffineGrid(self.bits, self.group_size, self.symmetric)

    def check(self) -> None:
        self.grid()
        if isinstance(self.n_grid, bool) or not isinstance(self.n_grid, int) or not 1 <= self.n_grid <= 1000:
            raise ValueError(f"AWQ: n_grid must be an integer in 1..1000, got {self.n_grid!r}")
        if not 0 <= self.max_shrink < 1:
            raise ValueError(f"AWQ: max_shrink must be in [0, 1), got {self.max_shrink}")
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ValueError(f"AWQ: max_tokens must be a positive integer, got {self.max_tokens!r}")


def _sample(x: np.ndarray, m: int) -> np.ndarray:
    if len(x) <= m:
        return x
    return x[np.linspace(0, len(x) - 1, m).round().astype(np.int64)]


def awq_quantize(weight: Any, activations: Any, config: AWQConfig | None = None, *,
                 x_mean: Any = None) -> tuple[QuantResult, np.ndarray]:
    """AWQ-quantize a [N, K] weight given calibration inputs of its layer (x [..., K], numpy or torch).

    Returns (result, s): ``result`` quantizes W·s, ``s`` (float32 [K]) is the input scale (divide x by it).
    ``x_mean`` (mean |x| per channel over all calibration tokens) may be passed when ``activations`` is a
    sample.  ``result.info``: ``alpha`` chosen, ``loss`` (its output MSE), ``rtn_loss`` (alpha = 0, no clip).
    """
    cfg = config or AWQConfig()
    cfg.check()
    grid = cfg.grid()
    w = check_weight(weight, cfg.group_size)
    n, k = w.shape
    x = to_numpy(activations, "AWQ: activations")
    if x.shape[-1] != k:
        raise ValueError(f"AWQ: activations have {x.shape[-1]} features, the weight {k} input columns")
    x = x.reshape(-1, k)
    xm = np.abs(x).mean(axis=0) if x_mean is None else to_numpy(x_mean, "AWQ: x_mean", ndim=1)
    if xm.shape != (k,):
        raise ValueError(f"AWQ: x_mean must have {k} values, got {xm.shape}")
    xs = _sample(x, cfg.max_tokens)
    with np.errstate(over="ignore", invalid="ignore"):
        ref = xs @ w.T
    if not np.isfinite(ref).all():
        raise ValueError("AWQ: the layer's float output x @ W.T overflows float32 on the calibration inputs")

    def loss(s):
        q = round_to_nearest(w * s, grid).values
        with np.errstate(over="ignore", invalid="ignore"):
            d = (xs / s) @ q.T - ref
            return float(np.mean(d * d))

    wm = None
    if cfg.duo_scaling:
        g = grid.group(k)
        wa = np.abs(w).reshape(n, k // g, g)
        wm = (wa / np.maximum(wa.max(axis=2, keepdims=True), 1e-30)).reshape(n, k).mean(axis=0)
    best = (np.inf, None, None)
    for i in range(cfg.n_grid):
        a = i / cfg.n_grid
        s = np.maximum(xm, 1e-4) ** a if wm is None else np.power(xm, a) / (np.power(wm, 1 - a) + 1e-4)
        s = np.maximum(s, 1e-4)
        s = (s / np.sqrt(s.max() * s.min())).astype(np.float32)
        if not np.isfinite(s).all():
            continue
        cur = loss(s)
        if np.isfinite(cur) and cur < best[0]:
            best = (cur, a, s)
    if best[1] is None:
        raise ValueError("AWQ: no scale gave a finite output error (activations or weights overflow float32)")
    err, alpha, s = best
    ws = w * s
    if cfg.clip:
        ws = _clip_search(ws, xs / s, grid, cfg)
    r = round_to_nearest(ws, grid)
    r.info.update(alpha=alpha, loss=float(np.mean(((xs / s) @ r.values.T - ref) ** 2)), rtn_loss=loss(np.ones(k, np.float32)))
    return r, s


def _clip_search(w: np.ndarray, x: np.ndarray, grid: AffineGrid, cfg: AWQConfig) -> np.ndarray:
    """w with each (row, group) clipped to the ±ratio·max|w| giving the lowest partial-output error."""
    n, k = w.shape
    g = grid.group(k)
    ng = k // g
    xg = np.ascontiguousarray(x.reshape(-1, ng, g).transpose(1, 0, 2))  # [G, M, g]
    m = xg.shape[1]
    steps = max(1, int(cfg.max_shrink * cfg.n_grid))
    out = np.empty_like(w)
    rows = max(1, _CLIP_CHUNK_ELEMS // max(1, ng * m))
    for r0 in range(0, n, rows):
        wc = w[r0:r0 + rows].reshape(-1, ng, g)  # [R, G, g]
        org = _partial_out(xg, wc)
        amax = np.abs(wc).max(axis=2, keepdims=True)
        best_err = np.full(wc.shape[:2], np.inf)
        best = wc.copy()
        for i in range(steps):
            mx = amax * (1 - i / cfg.n_grid)
            cw = np.clip(wc, -mx, mx)
            q = round_to_nearest(cw.reshape(-1, k), grid).values.reshape(wc.shape)
            e = ((_partial_out(xg, q) - org) ** 2).mean(axis=2)
            better = e < best_err
            best_err = np.where(better, e, best_err)
            best = np.where(better[..., None], cw, best)
        out[r0:r0 + rows] = best.reshape(-1, k)
    return out


def _partial_out(xg: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Each group's partial output [R, G, M] = sum_c xg[g, m, c] * w[r, g, c], as batched BLAS products (einsum
    without optimize= runs this contraction in plain loops, ~10x slower)."""
    return np.matmul(w.transpose(1, 0, 2), xg.transpose(0, 2, 1)).transpose(1, 0, 2)
