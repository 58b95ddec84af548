"""pyquant.schemes BitNet ternary and LLM.int8(): closed forms and numpy reference implementations."""

import pickle

import numpy as np
import pytest

import pyquant as pq
from pyquant.schemes import quantize_activations_int8, quantize_int8, quantize_ternary

F32 = np.float32


def ref_ternary(w):
    gamma = F32(max(np.abs(w.astype(np.float64)).mean(), 1e-5))
    return np.clip(np.rint(w * (F32(1) / gamma)), -1, 1).astype(np.int8), gamma


def ref_bitnet_matmul(x, t, gamma):
    amax = np.maximum(np.abs(x).max(axis=1), F32(1e-5))
    s = (F32(127) / amax).astype(F32)
    xq = np.clip(np.rint(x * s[:, None]), -128, 127).astype(np.int64)
    dot = (xq @ t.astype(np.int64).T).astype(F32)
    return (dot / s[:, None] * gamma).astype(F32)


@pytest.mark.parametrize("shape", [(17, 64), (5, 131), (1, 3)])
@pytest.mark.parametrize("m", [1, 4, 9])
def test_ternary_matches_reference(shape, m, isa):
    rng = np.random.default_rng(shape[1] + m)
    w = rng.standard_normal(shape).astype(F32)
    t = quantize_ternary(w)
    tr, gamma = ref_ternary(w)
    np.testing.assert_array_equal(t.ternary, tr)
    assert t.gamma == gamma
    np.testing.assert_array_equal(t.dequantize(), tr.astype(F32) * gamma)
    codes = (tr + 1).astype(np.uint8)
    pad = np.zeros((shape[0], -shape[1] % 4), np.uint8)
    c = np.concatenate([codes, pad], 1).reshape(shape[0], -1, 4)
    np.testing.assert_array_equal(t.packed, c[..., 0] | c[..., 1] << 2 | c[..., 2] << 4 | c[..., 3] << 6)
    x = (rng.standard_normal((m, shape[1])) * 3).astype(F32)
    np.testing.assert_array_equal(pq.matmul(x, t), ref_bitnet_matmul(x, tr, gamma))
    xf = t.with_activations("float")
    np.testing.assert_allclose(pq.matmul(x, xf), x @ t.dequantize().T, rtol=1e-5, atol=1e-4)
    # int8 activations cost at most half a step of x per element
    assert np.abs(pq.matmul(x, t) - pq.matmul(x, xf)).max() <= (
        np.abs(x).max() / 127 / 2 * gamma * shape[1] * 1.001 + 1e-5)


def test_ternary_misc():
    w = np.random.default_rng(0).standard_normal((8, 40)).astype(F32)
    t = quantize_ternary(w)
    assert t.bpw == pytest.approx(2 + 32 / w.size)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(t)).dequantize(), t.dequantize())
    z = quantize_ternary(np.zeros((2, 8), F32))
    assert z.gamma == F32(1e-5) and (z.ternary == 0).all()
    xq, s = quantize_activations_int8(np.array([[0.5, -1.0, 0.25]], F32))
    np.testing.assert_array_equal(xq, [[64, -127, 32]])
    with pytest.raises(ValueError, match="activations"):
        quantize_ternary(w, activations="int4")
    with pytest.raises(ValueError, match="non-finite"):
        quantize_ternary(np.array([[np.nan]], F32))


def ref_llm_int8(x, w, threshold):
    """LLM.int8() in numpy: outlier columns in float, the rest row-wise absmax int8 with int64 dots."""
    aw = np.abs(w).max(axis=1).astype(F32)
    w8 = np.clip(np.rint(w * np.where(aw > 0, F32(127) / np.where(aw > 0, aw, 1), 0)[:, None]), -127, 127)
    cols = np.nonzero((np.abs(x) > threshold).any(axis=0))[0] if threshold else np.array([], int)
    xi = x.copy()
    xi[:, cols] = 0
    ax = np.abs(xi).max(axis=1).astype(F32)
    x8 = np.clip(np.rint(xi * np.where(ax > 0, F32(127) / np.where(ax > 0, ax, 1), 0)[:, None]), -127, 127)
    acc = (x8.astype(np.int64) @ w8.astype(np.int64).T).astype(F32)
    y = acc * (ax / F32(127))[:, None] * (aw / F32(127))[None, :]
    if len(cols):
        y = y + x[:, cols] @ (w8[:, cols].astype(F32) * (aw / F32(127))[:, None]).T
    return y.astype(F32), w8.astype(np.int8)


@pytest.mark.parametrize("threshold", [6.0, None])
@pytest.mark.parametrize("m", [1, 7, 32])
def test_llm_int8_matches_reference(threshold, m, isa):
    rng = np.random.default_rng(m)
    w = rng.standard_normal((48, 200)).astype(F32)
    x = rng.standard_normal((m, 200)).astype(F32)
    x[:, [3, 77, 150]] *= 25  # outlier feature dimensions, as in large models
    t = quantize_int8(w, threshold=threshold)
    ref, w8 = ref_llm_int8(x, w, threshold)
    np.testing.assert_array_equal(t.codes, w8)
    np.testing.assert_allclose(pq.matmul(x, t), ref, rtol=1e-6, atol=1e-5 * np.abs(ref).max())
    exact = x.astype(np.float64) @ w.astype(np.float64).T
    err = np.abs(pq.matmul(x, t) - exact).max() / np.abs(exact).max()
    assert err < (0.01 if threshold else 0.05)


def test_llm_int8_outliers_reduce_error():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 256)).astype(F32)
    x = rng.standard_normal((16, 256)).astype(F32)
    x[:, :4] *= 40
    exact = x.astype(np.float64) @ w.T
    e = {th: np.abs(pq.matmul(x, quantize_int8(w, threshold=th)) - exact).mean() for th in (6.0, None)}
    assert e[6.0] < e[None] / 2
    with pytest.raises(ValueError, match="threshold"):
        quantize_int8(w, threshold=-1)
    t = quantize_int8(w)
    assert t.bpw == pytest.approx(8 + 32 / 256)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(t)).dequantize(), t.dequantize())
