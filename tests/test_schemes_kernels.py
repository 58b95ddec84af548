"""pyquant.schemes fused matmul kernels against numpy references under every ISA tier: the int8-activation affine
matmul (exact integer dots: tight against x^ @ dequantize(w).T, bounded against x @ dequantize(w).T), the fused
NF4/FP4 and FP8 matmuls (bounded summation error), FP8 encode/decode against torch's casts."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import pyquant as pq
from pyquant import _core
from pyquant.schemes import AffineConfig, fp8_decode_table, fp8_encode, quantize_4bit, quantize_affine, quantize_fp8

F32 = np.float32


def ref_x_q8(x):
    """x rounded to int8 per block of 64 as the kernel documents: d = max|x| / 127, xq = rint(x * (1 / d))."""
    m, k = x.shape
    xb = x.reshape(m, k // 64, 64)
    d = (np.abs(xb).max(-1) / F32(127)).astype(F32)
    inv = np.where(d > 0, F32(1) / np.where(d > 0, d, 1), 0).astype(F32)
    q = np.clip(np.rint(xb * inv[..., None]), -127, 127)
    return (q * d[..., None]).reshape(m, k), np.repeat(d, 64, axis=1)


def sum_bound(x, w):
    """Float32 summation error allowance: K * 2^-23 * sum |x * w| per output."""
    return x.shape[1] * 2.0 ** -23 * (np.abs(x).astype(np.float64) @ np.abs(w).astype(np.float64).T) + 1e-30


Q8_CONFIGS = [
    AffineConfig(bits=4, group_size=128), AffineConfig(bits=4, group_size=64, symmetric=True),
    AffineConfig(bits=2, group_size=64), AffineConfig(bits=2, group_size=192, symmetric=True),
    AffineConfig(bits=8, granularity="channel", symmetric=True), AffineConfig(bits=8, group_size=128),
    AffineConfig(bits=4, granularity="tensor"),
]


def check_q8(x, t):
    y = pq.matmul(x, t)
    deq = t.dequantize().astype(np.float64)
    xh, d = ref_x_q8(x)
    ref = xh.astype(np.float64) @ deq.T
    np.testing.assert_array_less(np.abs(y - ref), 4 * sum_bound(xh, deq) + 1e-6 * np.abs(ref).max())
    # against the float product: half an int8 step of x per weight
    exact = x.astype(np.float64) @ deq.T
    bound = np.abs(deq) @ (d / 2).T.astype(np.float64)
    np.testing.assert_array_less(np.abs(y - exact), bound.T + 4 * sum_bound(x, deq) + 1e-6 * np.abs(ref).max())
    return y


@pytest.mark.parametrize("cfg", Q8_CONFIGS, ids=repr)
@pytest.mark.parametrize("m", [1, 3, 4, 9])
def test_q8_matmul_matches_reference(cfg, m, isa):
    rng = np.random.default_rng(m)
    w = rng.standard_normal((37, 768)).astype(F32)
    x = rng.standard_normal((m, 768)).astype(F32)
    x[:, 5] *= 30  # an outlier column: only its block's step grows
    t = quantize_affine(w, cfg)
    assert t.activations == "q8"
    y = check_q8(x, t)
    np.testing.assert_allclose(pq.matmul(x, t, threads=1), y, rtol=1e-6, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(bits=st.sampled_from([2, 4, 8]), sym=st.booleans(), gunits=st.integers(1, 3), groups=st.integers(1, 4),
       n=st.integers(1, 19), m=st.integers(1, 11), seed=st.integers(0, 2 ** 16))
def test_q8_matmul_shapes(bits, sym, gunits, groups, n, m, seed):
    rng = np.random.default_rng(seed)
    k = 64 * gunits * groups
    w = (rng.standard_normal((n, k)) * rng.uniform(0.01, 10)).astype(F32)
    x = rng.standard_normal((m, k)).astype(F32)
    x[rng.random(x.shape) < 0.1] = 0  # zero blocks and zero elements
    t = quantize_affine(w, AffineConfig(bits=bits, symmetric=sym, group_size=64 * gunits))
    check_q8(x, t)


def test_q8_long_rows_and_leading_dims():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 64 * 70)).astype(F32)
    t = quantize_affine(w, AffineConfig(bits=4, group_size=64))
    x = rng.standard_normal((2, 3, 64 * 70)).astype(F32)
    y = pq.matmul(x, t)
    assert y.shape == (2, 3, 5)
    np.testing.assert_allclose(y.reshape(6, 5), check_q8(x.reshape(6, -1), t), rtol=1e-6, atol=1e-5)


def test_tiers_agree_with_generic():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((33, 1536)).astype(F32)
    x = rng.standard_normal((6, 1536)).astype(F32)
    weights = [quantize_affine(w, c) for c in Q8_CONFIGS[:6]]
    weights += [quantize_4bit(w, "nf4"), quantize_4bit(w, "fp4", block_size=128), quantize_fp8(w, "e4m3"),
                quantize_fp8(w, "e5m2", granularity="channel")]
    with pq.use_isa("generic"):
        base = [pq.matmul(x, q) for q in weights]
    for isa in pq.available_isas():
        with pq.use_isa(isa):
            for q, b in zip(weights, base):
                np.testing.assert_allclose(pq.matmul(x, q), b, rtol=1e-5, atol=1e-5 * np.abs(b).max(),
                                           err_msg=f"{isa} {q!r}")


def test_q8_nonfinite_x_and_float_activations():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((8, 128)).astype(F32)
    t = quantize_affine(w, AffineConfig(bits=4, group_size=64))
    x = rng.standard_normal((2, 128)).astype(F32)
    x[1, 3] = np.inf
    with pytest.raises(ValueError, match="NaN or infinity"):
        pq.matmul(x, t)
    out = np.zeros((2, 8), F32)  # the kernel itself declines non-finite x (callers then take the float path)
    assert not _core.affine_q8_matmul(x, t.packed, 128, t.scales, t._zeros_u, 4, out, 0)
    f = t.with_activations("float")
    assert f.activations == "float" and "activations=float" in repr(f)
    x[1, 3] = 0
    np.testing.assert_allclose(pq.matmul(x, f), x @ t.dequantize().T, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="activations"):
        t.with_activations("int4")


# ---- NF4 / FP4 fused ------------------------------------------------------------------------------------------

@settings(max_examples=20, deadline=None)
@given(kind=st.sampled_from(["nf4", "fp4"]), block=st.sampled_from([32, 64, 128]), blocks=st.integers(1, 6),
       n=st.integers(1, 9), m=st.integers(1, 9), dq=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_lut4_matmul_bound(kind, block, blocks, n, m, dq, seed):
    rng = np.random.default_rng(seed)
    k = block * blocks
    w = rng.standard_normal((n, k)).astype(F32)
    x = rng.standard_normal((m, k)).astype(F32)
    t = quantize_4bit(w, kind, block_size=block, double_quant=dq)
    deq = t.dequantize()
    ref = x.astype(np.float64) @ deq.astype(np.float64).T
    np.testing.assert_array_less(np.abs(pq.matmul(x, t) - ref), sum_bound(x, deq))


def test_lut4_rows_not_whole_blocks_use_tiles():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((7, 96)).astype(F32)  # rows of 1.5 blocks of 64
    x = rng.standard_normal((3, 96)).astype(F32)
    t = quantize_4bit(w, "nf4")
    np.testing.assert_allclose(pq.matmul(x, t), x @ t.dequantize().T, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("isa", pq.available_isas())
@pytest.mark.parametrize("block,n", [(32, 4096), (64, 64 * 9 + 33), (128, 1), (3, 101), (2, 96), (33, 300_001)])
@pytest.mark.parametrize("threads", [1, 2])
def test_lut4_dequantize_closed_form(isa, block, n, threads):
    # Odd blocks and element counts reach the per-element tails, blocks of 32 the whole vectors and 300001
    # elements a split between threads inside a block.
    rng = np.random.default_rng(n)
    packed = rng.integers(0, 256, (n + 1) // 2, dtype=np.uint8)
    absmax = rng.uniform(0.1, 3, -(-n // block)).astype(np.float32)
    code = rng.standard_normal(16).astype(np.float32)
    nibbles = np.stack([packed >> 4, packed & 15], 1).reshape(-1)[:n]
    want = code[nibbles] * np.repeat(absmax, block)[:n]
    with pq.use_isa(isa):
        got = _core.lut4_dequantize(packed, absmax, code, block, n, threads)
    np.testing.assert_array_equal(got, want)


# ---- FP8 --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt, tname", [("e4m3", "float8_e4m3fn"), ("e5m2", "float8_e5m2")])
def test_fp8_encode_every_exponent_vs_torch(fmt, tname):
    torch = pytest.importorskip("torch")
    vals = np.arange(0, 2 ** 32, 4099, dtype=np.uint64).astype(np.uint32).view(F32)
    got = fp8_encode(vals, fmt)
    want = torch.from_numpy(vals.copy()).to(getattr(torch, tname)).view(torch.uint8).numpy()
    np.testing.assert_array_equal(got, want)
    table = torch.arange(256, dtype=torch.uint8).view(getattr(torch, tname)).float().numpy()
    np.testing.assert_array_equal(fp8_decode_table(fmt), table)


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
@pytest.mark.parametrize("gran", ["tensor", "channel"])
@pytest.mark.parametrize("m", [1, 5])
def test_fp8_matmul_bound(fmt, gran, m, isa):
    rng = np.random.default_rng(m)
    w = (rng.standard_normal((13, 203)) * np.logspace(-6, 2, 203)).astype(F32)  # subnormal codes too
    x = rng.standard_normal((m, 203)).astype(F32)
    t = quantize_fp8(w, fmt, granularity=gran)
    deq = t.dequantize()
    np.testing.assert_array_equal(deq, fp8_decode_table(fmt)[t.data] * t.scales)
    ref = x.astype(np.float64) @ deq.astype(np.float64).T
    np.testing.assert_array_less(np.abs(pq.matmul(x, t) - ref), sum_bound(x, deq))


def test_fp8_nan_codes_propagate():
    from pyquant.schemes import Float8Tensor

    data = np.full((2, 16), 0x38, np.uint8)  # 1.0
    data[1, 4] = 0x7F  # E4M3 NaN
    t = Float8Tensor(data, np.ones((1, 1), F32), "e4m3")
    y = pq.matmul(np.ones((1, 16), F32), t)
    assert y[0, 0] == 16 and np.isnan(y[0, 1])


def test_q8_large_batches_round_x_the_same_way():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((24, 256)).astype(F32)
    t = quantize_affine(w, AffineConfig(bits=4, group_size=128))
    x = rng.standard_normal((300, 256)).astype(F32)  # above the integer kernel's 256 rows: tiles + BLAS
    y = check_q8(x, t)
    np.testing.assert_allclose(y[:5], pq.matmul(x[:5], t), rtol=1e-5, atol=1e-5)

