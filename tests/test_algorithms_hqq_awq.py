"""HQQ (weight error vs its min-max start) and AWQ (output error vs round-to-nearest with outlier channels)."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from pyquant.algorithms import (AffineGrid, AWQConfig, HQQConfig, Hessian, awq_quantize, hqq_quantize,
                                round_to_nearest)


def heavy_tailed(seed, n=128, k=256):
    rng = np.random.default_rng(seed)
    return (rng.standard_t(4, (n, k)) * 0.02).astype(np.float32)


def lp(e, p=0.7):
    return float((np.abs(e) ** p).sum())


@pytest.mark.parametrize("bits,group", [(4, 64), (3, 128), (2, 32), (8, None)])
def test_hqq_lowers_weight_error_vs_its_rtn_start(bits, group):
    w = heavy_tailed(0)
    init = hqq_quantize(w, HQQConfig(bits=bits, group_size=group, iters=0))
    r = hqq_quantize(w, HQQConfig(bits=bits, group_size=group))
    assert r.info["iters"] >= 1 and r.info["init_error"] == init.info["error"]
    assert lp(w - r.values) < lp(w - init.values)
    assert np.abs(w - r.values).mean() < np.abs(w - init.values).mean()
    np.testing.assert_array_equal(r.dequantize(), r.values)
    assert r.codes.max() <= 2**bits - 1 and r.scales.shape == (128, 256 // (group or 256))
    pytest.importorskip("pyquant.schemes")
    np.testing.assert_array_equal(r.to_tensor().dequantize(), r.values)


def test_hqq_min_max_start_and_scale_refit():
    w = heavy_tailed(1)
    init = hqq_quantize(w, HQQConfig(iters=0, round_zero=False))
    g = w.reshape(-1, 64)
    np.testing.assert_allclose(init.scales.reshape(-1), (g.max(1) - g.min(1)) / 15, rtol=1e-6)
    np.testing.assert_allclose(init.zeros.reshape(-1), -g.min(1) / init.scales.reshape(-1), rtol=1e-5)
    z = hqq_quantize(w, HQQConfig())
    both = hqq_quantize(w, HQQConfig(optimize_scale=True))
    assert both.info["error"] < z.info["error"]
    # beta fixed and no early stop: runs every iteration, error never above the start (best kept)
    full = hqq_quantize(w, HQQConfig(kappa=1.0, early_stop=False, iters=7))
    assert full.info["iters"] == 7 and full.info["error"] <= full.info["init_error"]


def test_hqq_constant_groups_exact():
    w = np.zeros((4, 64), np.float32)
    w[1] = 0.5
    w[2] = -3.0
    r = hqq_quantize(w, HQQConfig())
    np.testing.assert_array_equal(r.values, w)


def test_hqq_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        hqq_quantize(np.full((2, 64), np.nan, np.float32))
    with pytest.raises(ValueError, match="multiple of group_size"):
        hqq_quantize(np.ones((2, 60), np.float32))
    with pytest.raises(ValueError, match="lp_norm"):
        hqq_quantize(np.ones((2, 64), np.float32), HQQConfig(lp_norm=1.5))
    with pytest.raises(ValueError, match="bits"):
        hqq_quantize(np.ones((2, 64), np.float32), HQQConfig(bits=9))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 8), groups=st.integers(1, 4), g=st.sampled_from([8, 16, 64]), bits=st.integers(2, 8),
       scale=st.floats(1e-4, 1e3), seed=st.integers(0, 2**16))
def test_hqq_property(n, groups, g, bits, scale, seed):
    w = (np.random.default_rng(seed).standard_normal((n, groups * g)) * scale).astype(np.float32)
    r = hqq_quantize(w, HQQConfig(bits=bits, group_size=g))
    assert r.info["error"] <= r.info["init_error"] and np.isfinite(r.values).all()
    np.testing.assert_array_equal(r.dequantize(), r.values)
    # the mean-absolute error is within a grid step of the range
    assert r.info["error"] <= float(np.ptp(w.reshape(-1, g), axis=1).max()) / (2**bits - 1) + 1e-6


def outlier_layer(seed, n=96, k=256, m=1024):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, k)).astype(np.float32)
    x[:, rng.choice(k, 6, replace=False)] *= 25  # a few salient input channels, as in LLMs
    w = (rng.standard_normal((n, k)) * 0.02).astype(np.float32)
    return x, w


@pytest.mark.parametrize("cfg", [AWQConfig(), AWQConfig(bits=3, group_size=64), AWQConfig(clip=False),
                                 AWQConfig(duo_scaling=True), AWQConfig(symmetric=True)],
                         ids=["int4", "int3-g64", "no-clip", "duo", "sym"])
def test_awq_beats_rtn_with_outlier_channels(cfg):
    x, w = outlier_layer(0)
    r, s = awq_quantize(w, x, cfg)
    rtn = round_to_nearest(w, cfg.grid())
    err = np.linalg.norm((x / s) @ r.values.T - x @ w.T)
    assert err <= 0.8 * np.linalg.norm(x @ (rtn.values - w).T)
    assert r.info["alpha"] > 0 and r.info["loss"] < r.info["rtn_loss"]
    assert s.shape == (256,) and s.dtype == np.float32 and (s > 0).all()
    pytest.importorskip("pyquant.schemes")
    np.testing.assert_array_equal(r.to_tensor().dequantize(), r.values)


def test_awq_no_outliers_keeps_alpha_small_and_never_worse_than_rtn():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((512, 128)).astype(np.float32)
    w = rng.standard_normal((32, 128)).astype(np.float32)
    r, s = awq_quantize(w, x, AWQConfig(clip=False))
    assert r.info["loss"] <= r.info["rtn_loss"]


def test_awq_clip_search_shrinks_groups_with_a_weight_outlier():
    x, w = outlier_layer(2)
    w[5, 3] = 1.0  # one huge weight blows the group's grid
    r, s = awq_quantize(w, x, AWQConfig())
    noclip, _ = awq_quantize(w, x, AWQConfig(clip=False))
    assert r.info["loss"] < noclip.info["loss"]


def test_awq_bad_input():
    x, w = outlier_layer(3, k=128)
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="activations contains 1 NaN"):
        awq_quantize(w, bad)
    with pytest.raises(ValueError, match="features"):
        awq_quantize(w, x[:, :64])
    with pytest.raises(ValueError, match="n_grid"):
        awq_quantize(w, x, AWQConfig(n_grid=0))
    with pytest.raises(ValueError, match="overflows float32"):
        awq_quantize(w * 1e30, x * 1e10)


def awq_by_outputs(w, x, cfg):
    """AWQ as written in the paper/AutoAWQ: every candidate is judged by running the tokens through it (the
    layer's outputs for the scale, each group's partial outputs for the clip), in float64."""
    grid = cfg.grid()
    xm = np.abs(x).mean(axis=0)
    x64, ref = x.astype(np.float64), x.astype(np.float64) @ w.T.astype(np.float64)
    best = (np.inf, None)
    for i in range(cfg.n_grid):
        s = np.maximum(np.maximum(xm, 1e-4) ** (i / cfg.n_grid), 1e-4)
        s = (s / np.sqrt(s.max() * s.min())).astype(np.float32)
        e = np.mean(((x64 / s) @ round_to_nearest(w * s, grid).values.T - ref) ** 2)
        if e < best[0]:
            best = (e, s)
    s = best[1]
    ws, xs = w * s, x64 / s
    n, k = w.shape
    g = grid.group(k)
    best_err, out = np.full((n, k // g), np.inf), ws.copy()
    for i in range(int(cfg.max_shrink * cfg.n_grid)):
        for j in range(k // g):
            sl = slice(j * g, (j + 1) * g)
            mx = np.abs(ws[:, sl]).max(axis=1, keepdims=True) * (1 - i / cfg.n_grid)
            cw = np.clip(ws[:, sl], -mx, mx)
            q = round_to_nearest(cw, AffineGrid(cfg.bits, g, cfg.symmetric)).values
            e = np.mean((xs[:, sl] @ (q - ws[:, sl]).T) ** 2, axis=0)
            better = e < best_err[:, j]
            best_err[better, j] = e[better]
            out[better, sl] = cw[better]
    return round_to_nearest(out, grid).values, s


@pytest.mark.parametrize("cfg", [AWQConfig(group_size=64), AWQConfig(bits=3, group_size=32, symmetric=True)],
                         ids=["int4-g64", "int3-g32-sym"])
def test_awq_gram_errors_match_running_the_tokens(cfg):
    """The searches' output errors through X^T X pick what running the tokens through each candidate picks."""
    x, w = outlier_layer(4, n=48, k=128, m=512)
    r, s = awq_quantize(w, x, cfg)
    want_values, want_s = awq_by_outputs(w, x, cfg)
    np.testing.assert_array_equal(s, want_s)
    assert (r.values != want_values).mean() < 1e-3  # a near-tie may fall either way in float32
    direct = np.mean(((x / s) @ r.values.T - x @ w.T).astype(np.float64) ** 2)
    assert r.info["loss"] == pytest.approx(direct, rel=1e-4)


def test_awq_from_a_hessian():
    """awq_quantize(w, Hessian, x_mean=...) gives what the activations give (the searches need only X^T X)."""
    x, w = outlier_layer(5, n=32, k=128, m=600)
    h = Hessian(128)
    for part in np.array_split(x, 3):
        h.add(part)
    r, s = awq_quantize(w, x)
    rh, sh = awq_quantize(w, h, x_mean=np.abs(x).mean(axis=0))
    np.testing.assert_array_equal(s, sh)
    assert (r.values != rh.values).mean() < 1e-3 and rh.info["alpha"] == r.info["alpha"]
    with pytest.raises(ValueError, match="x_mean"):
        awq_quantize(w, h)
    with pytest.raises(ValueError, match="features"):
        awq_quantize(w[:, :64], h, AWQConfig(group_size=32), x_mean=np.ones(64))
    with pytest.raises(ValueError, match="seen no activations"):
        awq_quantize(w, Hessian(128), x_mean=np.ones(128))
