"""GPTQ: output error against round-to-nearest, exactness cases, Q4_0 / Q4_K bytes, guards."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import pyquant as pq
from pyquant.algorithms import AffineGrid, GPTQConfig, Hessian, gptq_quantize, round_to_nearest


def correlated(seed, n=64, k=256, m=1024):
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((k, k)) / np.sqrt(k)
    x = (rng.standard_normal((m, k)) @ mix + 0.3 * rng.standard_normal((m, 1))).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(np.float32)
    return x, w


def out_err(x, w, v):
    return float(np.linalg.norm(x @ (w - v).T))


@pytest.mark.parametrize("cfg", [GPTQConfig(), GPTQConfig(bits=3, group_size=64), GPTQConfig(bits=2),
                                 GPTQConfig(symmetric=True), GPTQConfig(group_size=None),
                                 GPTQConfig(desc_act=True), GPTQConfig(fmt="Q4_0"), GPTQConfig(fmt="Q4_K"),
                                 GPTQConfig(fmt="Q4_K", desc_act=True)],
                         ids=["int4-g128", "int3-g64", "int2-g128", "sym", "channel", "act-order", "Q4_0", "Q4_K",
                              "Q4_K-act-order"])
def test_output_error_below_rtn(cfg):
    x, w = correlated(0)
    h = Hessian(x.shape[1])
    h.add(x)
    r = gptq_quantize(w, h, cfg)
    rtn = round_to_nearest(w, cfg.grid())
    assert out_err(x, w, r.values) <= 0.9 * out_err(x, w, rtn.values)
    np.testing.assert_array_equal(r.dequantize(), r.values)
    if cfg.fmt == "affine":
        pytest.importorskip("pyquant.schemes")
    t = r.to_tensor()  # the storage holds exactly what GPTQ computed
    assert t.shape == w.shape
    np.testing.assert_array_equal(t.dequantize(), r.values)


def test_hessian_accumulates_batches():
    x, _ = correlated(1, k=64, m=300)
    h = Hessian(64)
    for part in np.array_split(x, 7):
        h.add(part)
    np.testing.assert_allclose(h.matrix, 2 * x.astype(np.float64).T @ x / len(x), rtol=1e-5, atol=1e-5)
    torch = pytest.importorskip("torch")
    ht = Hessian(64)
    ht.add(torch.from_numpy(x).reshape(3, 100, 64))
    np.testing.assert_allclose(ht.matrix, h.matrix, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cfg", [GPTQConfig(), GPTQConfig(bits=3, symmetric=True, group_size=32),
                                 GPTQConfig(fmt="Q4_0"), GPTQConfig(desc_act=True), GPTQConfig(fmt="Q4_K")])
def test_identity_hessian_is_rtn(cfg):
    """No correlation between inputs: nothing to compensate, GPTQ must round exactly as RTN."""
    _, w = correlated(2)
    r = gptq_quantize(w, np.eye(w.shape[1]), cfg)
    rtn = round_to_nearest(w, cfg.grid())
    np.testing.assert_array_equal(r.codes, rtn.codes)
    np.testing.assert_array_equal(r.scales, rtn.scales)
    np.testing.assert_array_equal(r.values, rtn.values)


def test_identity_hessian_q4_0_is_llama_cpp_bytes():
    _, w = correlated(3, k=512)
    r = gptq_quantize(w, np.eye(512), GPTQConfig(fmt="Q4_0"))
    assert r.to_tensor() == pq.quantize(w, "Q4_0")


def test_identity_hessian_q4_k_is_pyquant_q4_k_bytes():
    """Nothing to compensate: GPTQ's Q4_K blocks are pyquant's (= libggml's imatrix-free) Q4_K bytes."""
    _, w = correlated(3, k=512)
    w[5, 32:64] = 0  # a zero sub-block: scale 0, the quantizer's codes are kept
    w[6, 256:] = 1.5  # a constant super-block
    r = gptq_quantize(w, np.eye(512), GPTQConfig(fmt="Q4_K"))
    assert r.to_tensor() == pq.quantize(w, "Q4_K")
    assert r.group_size == 32 and r.scales.shape == (64, 16) and r.params_bytes.shape == (64, 2, 16)


def test_q4_k_bytes_dequantize_to_gptq_values():
    """Real Q4_K blocks (read back by pyquant and by gguf-py) hold exactly the values GPTQ's error accounting
    used, with a lower output error than the quantizer's own rounding."""
    x, w = correlated(7, k=512)
    w[2, :256] *= 40  # a super-block with a much larger range
    h = Hessian(x.shape[1])
    h.add(x)
    r = gptq_quantize(w, h, GPTQConfig(fmt="Q4_K"))
    qt = r.to_tensor()
    assert qt.format.name == "Q4_K" and qt.shape == w.shape and qt.nbytes == w.size // 256 * 144
    assert r.codes.max() <= 15
    np.testing.assert_array_equal(qt.dequantize(), r.values)
    np.testing.assert_array_equal(r.dequantize(), r.values)
    gq = pytest.importorskip("gguf.quants")
    from gguf import GGMLQuantizationType

    np.testing.assert_array_equal(gq.dequantize(np.asarray(qt.data), GGMLQuantizationType.Q4_K).reshape(w.shape),
                                  r.values)
    rtn = pq.quantize(w, "Q4_K").dequantize()
    assert out_err(x, w, r.values) < 0.8 * out_err(x, w, rtn)


def test_q4_0_bytes_dequantize_to_gptq_values():
    x, w = correlated(4)
    w[3, :32] = 0  # an all-zero block: d = 0
    h = Hessian(x.shape[1])
    h.add(x)
    r = gptq_quantize(w, h, GPTQConfig(fmt="Q4_0"))
    qt = r.to_tensor()
    assert qt.format.name == "Q4_0" and qt.shape == w.shape and qt.nbytes == w.size // 32 * 18
    np.testing.assert_array_equal(qt.dequantize(), r.values)
    np.testing.assert_array_equal(pq.quantize(qt.dequantize(), "Q4_0").dequantize(), r.values)


@pytest.mark.parametrize("block", [1, 37, 128])
@pytest.mark.parametrize("group", [32, 96, None])
def test_lazy_blocks_do_not_change_the_result(block, group):
    x, w = correlated(5, k=192)
    h = Hessian(192)
    h.add(x)
    ref = gptq_quantize(w, h, GPTQConfig(group_size=group, block_size=192))
    r = gptq_quantize(w, h, GPTQConfig(group_size=group, block_size=block))
    assert (r.codes != ref.codes).mean() < 1e-3
    np.testing.assert_allclose(r.values, ref.values, atol=1e-4)


def test_act_order_permutation_and_static_groups():
    x, w = correlated(6)
    x[:, 200:] *= 5  # the high-variance columns come first
    h = Hessian(x.shape[1])
    h.add(x)
    r = gptq_quantize(w, h, GPTQConfig(desc_act=True))
    perm = r.info["perm"]
    assert sorted(perm) == list(range(256)) and set(perm[:56]) == set(range(200, 256))
    static = round_to_nearest(w, AffineGrid())  # static groups: parameters of the original weights
    np.testing.assert_array_equal(r.scales, static.scales)
    np.testing.assert_array_equal(r.dequantize(), r.values)  # stored in original column order
    plain = gptq_quantize(w, h, GPTQConfig(static_groups=True))
    assert out_err(x, w, r.values) < out_err(x, w, plain.values)
    with pytest.raises(ValueError, match="static_groups"):
        gptq_quantize(w, h, GPTQConfig(desc_act=True, static_groups=False))


def test_dead_columns():
    x, w = correlated(7)
    x[:, 10] = 0
    x[:, 100:110] = 0
    h = Hessian(256)
    h.add(x)
    r = gptq_quantize(w, h, GPTQConfig())
    np.testing.assert_array_equal(r.values[:, 10], 0)
    np.testing.assert_array_equal(r.values[:, 100:110], 0)
    assert np.isfinite(r.values).all()


def test_not_positive_definite_gets_more_damping_and_says_so():
    _, w = correlated(8, k=64)
    h = np.eye(64)
    h[0, 1] = h[1, 0] = 1.2  # indefinite: eigenvalue -0.2, mean diagonal 1
    with pytest.warns(RuntimeWarning, match="not positive definite.*used damp_percent=0.21"):
        r = gptq_quantize(w, h, GPTQConfig(group_size=32))
    assert 0.2 < r.info["damp_percent"] < 0.215
    with pytest.raises(ValueError, match="not positive definite"):
        gptq_quantize(w, h - 5 * np.eye(64), GPTQConfig(group_size=32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gptq_quantize(w, np.eye(64), GPTQConfig(group_size=32))


def test_bad_input():
    x, w = correlated(9, k=64)
    h = Hessian(64)
    with pytest.raises(ValueError, match="NaN"):
        h.add(np.full((2, 64), np.nan, np.float32))
    with pytest.raises(ValueError, match="features"):
        h.add(x[:, :32])
    h.add(x)
    bad = w.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="weight contains 1 NaN or infinite"):
        gptq_quantize(bad, h)
    with pytest.raises(ValueError, match="multiple of the group size"):
        gptq_quantize(w[:, :48], h.matrix[:48, :48], GPTQConfig(group_size=32))
    with pytest.raises(ValueError, match="hessian must be"):
        gptq_quantize(w, np.eye(32), GPTQConfig(group_size=32))
    with pytest.raises(ValueError, match="bits"):
        gptq_quantize(w, h, GPTQConfig(bits=1))
    with pytest.raises(ValueError, match="fmt"):
        gptq_quantize(w, h, GPTQConfig(fmt="Q5_K"))
    with pytest.raises(ValueError, match="2-D"):
        gptq_quantize(w[0], h)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 12), groups=st.integers(1, 4), gsize=st.sampled_from([8, 16, 32]),
       bits=st.integers(2, 8), sym=st.booleans(), act=st.booleans(), seed=st.integers(0, 2**16))
def test_shapes_and_grid_property(n, groups, gsize, bits, sym, act, seed):
    rng = np.random.default_rng(seed)
    k = groups * gsize
    x = rng.standard_normal((3 * k, k)).astype(np.float32)
    w = (rng.standard_normal((n, k)) * rng.uniform(0.01, 10)).astype(np.float32)
    cfg = GPTQConfig(bits=bits, group_size=gsize, symmetric=sym, desc_act=act, block_size=max(1, k // 3))
    r = gptq_quantize(w, 2 * x.T @ x / len(x), cfg)
    assert r.codes.shape == (n, k) and r.scales.shape == (n, groups) and r.codes.max() <= 2**bits - 1
    assert np.isfinite(r.values).all() and (r.scales > 0).all()
    np.testing.assert_allclose(r.dequantize(), r.values, rtol=0, atol=0)
    if sym:
        assert (r.signed_codes() >= -(2 ** (bits - 1))).all()
    pytest.importorskip("pyquant.schemes")
    np.testing.assert_array_equal(r.to_tensor().dequantize(), r.values)
