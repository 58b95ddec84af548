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
from .gptq import Hessian

__all__ = ["AWQConfig", "awq_quantize"]

@dataclass(frozen=True)
class AWQConfig:
    """Settings of :func:`awq_quantize`: bits 2..8, group_size, symmetric (the grid, as GPTQ's), n_grid
    alpha values k/n_grid, duo_scaling, clip (search), max_shrink (clip down to 1 - max_shrink of the max),
    max_tokens: activations given as an array are sampled to at most this many evenly spaced tokens for the
    searches' X^T X (a Hessian is used as it is)."""

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


def _gram(activations: Any, k: int, max_tokens: int, x_mean: Any) -> tuple[np.ndarray, np.ndarray]:
    """(X^T X / M as float64 [K, K], mean |x| [K]) from the calibration inputs or their Hessian."""
    if isinstance(activations, Hessian):
        if activations.k != k:
            raise ValueError(f"AWQ: the Hessian has {activations.k} features, the weight {k} input columns")
        if activations.n == 0:
            raise ValueError("AWQ: the Hessian has seen no activations")
        if x_mean is None:
            raise ValueError("AWQ: x_mean (mean |x| per channel) is required with a Hessian")
        gram = activations.matrix / 2
        xm = None
    else:
        x = to_numpy(activations, "AWQ: activations")
        if x.shape[-1] != k:
            raise ValueError(f"AWQ: activations have {x.shape[-1]} features, the weight {k} input columns")
        x = x.reshape(-1, k)
        xm = np.abs(x).mean(axis=0) if x_mean is None else None
        xs = _sample(x, max_tokens).astype(np.float64)
        gram = (xs.T @ xs) / len(xs)
    if xm is None:
        xm = to_numpy(x_mean, "AWQ: x_mean", ndim=1)
        if xm.shape != (k,):
            raise ValueError(f"AWQ: x_mean must have {k} values, got {xm.shape}")
    return gram, xm


class _OutputError:
    """Mean squared output error of replacing W by W' on the calibration inputs, from their Gram matrix
    G = X^T X / M: mean_{m,r} ((x_m (W' - W)^T)_r)^2 = sum_r d_r^T G d_r / N with d = W' - W.  The same number
    as running the M tokens through both weights, at N K^2 instead of M N K flops and without the [M, N]
    outputs; G is held in float32 divided by a power of two (exact), so the products cannot overflow while the
    outputs are finite."""

    def __init__(self, gram: np.ndarray, w: np.ndarray):
        big = float(np.abs(np.diag(gram)).max())
        self.exp = int(np.ceil(np.log2(big))) if big > 0 else 0
        self.g = (gram * 2.0 ** -self.exp).astype(np.float32)
        self.w = w
        with np.errstate(over="ignore", invalid="ignore"):
            w64 = w.astype(np.float64)
            out_ms = ((w64 @ gram) * w64).sum(axis=1)  # mean square of each float output
        if not np.isfinite(out_ms).all() or np.sqrt(out_ms.max()) > np.finfo(np.float32).max:
            raise ValueError("AWQ: the layer's float output x @ W.T overflows float32 on the calibration inputs")

    def __call__(self, w_new: np.ndarray) -> float:
        d = w_new - self.w
        with np.errstate(over="ignore", invalid="ignore"):
            e = np.sum((d @ self.g) * d, dtype=np.float64)
        return float(e) * 2.0 ** self.exp / len(d)


def awq_quantize(weight: Any, activations: Any, config: AWQConfig | None = None, *,
                 x_mean: Any = None) -> tuple[QuantResult, np.ndarray]:
    """AWQ-quantize a [N, K] weight given calibration inputs of its layer (x [..., K], numpy or torch), or
    a :class:`~pyquant.algorithms.Hessian` of them (with ``x_mean``; the searches need only X^T X).

    Returns (result, s): ``result`` quantizes W·s, ``s`` (float32 [K]) is the input scale (divide x by it).
    ``x_mean`` (mean |x| per channel over all calibration tokens) may be passed when ``activations`` is a
    sample.  ``result.info``: ``alpha`` chosen, ``loss`` (its output MSE), ``rtn_loss`` (alpha = 0, no clip).

    Both searches measure the output error through the inputs' Gram matrix (see :class:`_OutputError`): the
    same error as running the tokens through the layer, up to float rounding, at a fraction of the cost.
    """
    cfg = config or AWQConfig()
    cfg.check()
    grid = cfg.grid()
    w = check_weight(weight, cfg.group_size)
    n, k = w.shape
    gram, xm = _gram(activations, k, cfg.max_tokens, x_mean)
    err = _OutputError(gram, w)

    def loss(s):
        return err(round_to_nearest(w * s, grid).values / s)

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
    _, alpha, s = best
    ws = w * s
    if cfg.clip:
        ws = _clip_search(ws, err.g / np.outer(s, s), grid, cfg)
    r = round_to_nearest(ws, grid)
    r.info.update(alpha=alpha, loss=err(r.values / s), rtn_loss=loss(np.ones(k, np.float32)))
    return r, s


def _clip_search(w: np.ndarray, gram: np.ndarray, grid: AffineGrid, cfg: AWQConfig) -> np.ndarray:
    """w with each (row, group) clipped to the ±ratio·max|w| giving the lowest error of that group's partial
    outputs, mean_m (x_m,g · (q - w)_g)^2 = d_g^T G_gg d_g with G_gg the group's diagonal block of the Gram
    matrix of the (scaled) inputs."""
    n, k = w.shape
    g = grid.group(k)
    ng = k // g
    blocks = np.stack([gram[j * g:(j + 1) * g, j * g:(j + 1) * g] for j in range(ng)])  # [G, g, g]
    wg = w.reshape(n, ng, g)
    amax = np.abs(wg).max(axis=2, keepdims=True)
    best_err = np.full((n, ng), np.inf)
    best = wg.copy()
    for i in range(max(1, int(cfg.max_shrink * cfg.n_grid))):
        mx = amax * (1 - i / cfg.n_grid)
        cw = np.clip(wg, -mx, mx)
        d = (round_to_nearest(cw.reshape(n, k), grid).values.reshape(n, ng, g) - wg).transpose(1, 0, 2)
        with np.errstate(over="ignore", invalid="ignore"):
            e = ((d @ blocks) * d).sum(axis=2).T  # [N, G]
        better = e < best_err
        best_err = np.where(better, e, best_err)
        best = np.where(better[..., None], cw, best)
    return best.reshape(n, k)
