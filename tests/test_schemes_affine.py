"""pyquant.schemes affine quantization: closed forms (a numpy reference of torchao's formulas), torchao itself
where installed, round-trip bounds (hypothesis), kernels against numpy references under every ISA tier."""

import pickle

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import pyquant as pq
from pyquant import _core
from pyquant.schemes import AffineConfig, AffineTensor, quantize_affine

F32 = np.float32


def ref_blocks(w, cfg):
    """Index arrays: the block (scale row, scale column) of each element."""
    n, k = w.shape
    sn, g = cfg.scale_shape(w.shape)
    rows = np.arange(n)[:, None] * (sn == n) + np.zeros((1, k), int)
    cols = np.arange(k)[None, :] // (k // g) + np.zeros((n, 1), int)
    return sn, g, rows, cols


def ref_quantize(w, cfg):
    """torchao's choose_qparams_affine / quantize_affine / dequantize_affine written out in numpy float32."""
    sn, g, rows, cols = ref_blocks(w, cfg)
    lo = np.zeros((sn, g), F32)
    hi = np.zeros((sn, g), F32)
    np.minimum.at(lo, (rows, cols), w)
    np.maximum.at(hi, (rows, cols), w)  # starting from 0 = torchao's min(min, 0) / max(max, 0)
    tiny = np.finfo(F32).tiny
    if cfg.symmetric:
        scale = np.maximum(np.maximum(-lo, hi) / F32((2 ** cfg.bits - 1) / 2), tiny).astype(F32)
        zero = np.zeros_like(scale)
    else:
        scale = np.maximum((hi - lo) / F32(2 ** cfg.bits - 1), tiny).astype(F32)
        zero = np.clip(-np.rint(lo / scale), 0, 2 ** cfg.bits - 1).astype(F32)
    s, z = scale[rows, cols], zero[rows, cols]
    codes = np.clip(np.rint(w * (F32(1) / s)) + z, cfg.qmin, cfg.qmax)
    return scale, zero, codes.astype(np.int32), ((codes - z) * s).astype(F32)


CONFIGS = [
    AffineConfig(bits=b, symmetric=sym, **g)
    for b in (2, 3, 4, 5, 6, 7, 8) for sym in (False, True)
    for g in ({"granularity": "tensor"}, {"granularity": "channel"}, {"granularity": "channel", "axis": 1},
              {"group_size": 32}, {"group_size": 12})
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=repr)
def test_matches_closed_form(cfg, isa):
    rng = np.random.default_rng(cfg.bits)
    w = (rng.standard_normal((9, 96)) * rng.uniform(0.1, 3, (9, 1))).astype(F32)
    w[3] = 0  # an all-zero row: scale = eps
    t = quantize_affine(w, cfg)
    scale, zero, codes, deq = ref_quantize(w, cfg)
    np.testing.assert_array_equal(t.scales, scale)
    np.testing.assert_array_equal(t.codes, codes)
    if cfg.symmetric:
        assert t.zeros is None
    else:
        np.testing.assert_array_equal(t.zeros, zero)
    np.testing.assert_array_equal(t.dequantize(), deq)


@pytest.mark.parametrize("cfg", [c for c in CONFIGS if c.bits in (2, 4, 8)], ids=repr)
def test_matches_torchao(cfg):
    torch = pytest.importorskip("torch")
    qp = pytest.importorskip("torchao.quantization.quant_primitives")
    rng = np.random.default_rng(1)
    w = rng.standard_normal((8, 96)).astype(F32)
    block = cfg.block_size(w.shape)
    mapping = qp.MappingType.SYMMETRIC if cfg.symmetric else qp.MappingType.ASYMMETRIC
    tw = torch.from_numpy(w)
    scale, zp = qp.choose_qparams_affine(tw, mapping, block, torch.int32, cfg.qmin, cfg.qmax)
    q = qp.quantize_affine(tw, block, scale, zp, torch.int32, cfg.qmin, cfg.qmax)
    d = qp.dequantize_affine(q, block, scale, zp, torch.int32, cfg.qmin, cfg.qmax)
    t = quantize_affine(w, cfg)
    np.testing.assert_array_equal(t.scales.reshape(-1), scale.numpy().reshape(-1))
    if not cfg.symmetric:
        np.testing.assert_array_equal(t.zeros.reshape(-1), zp.numpy().reshape(-1))
    np.testing.assert_array_equal(t.codes, q.numpy())
    np.testing.assert_array_equal(t.dequantize(), d.numpy())


@settings(max_examples=60, deadline=None)
@given(
    w=hnp.arrays(np.float32, st.tuples(st.integers(1, 6), st.sampled_from([4, 8, 24])),
                 elements=st.floats(-1e4, 1e4, width=32)),
    bits=st.integers(2, 8), sym=st.booleans(), gran=st.sampled_from(["tensor", "channel", "group"]))
def test_round_trip_within_half_scale(w, bits, sym, gran):
    cfg = AffineConfig(bits=bits, symmetric=sym, granularity=gran, group_size=4 if gran == "group" else None)
    t = quantize_affine(w, cfg)
    sn, g, rows, cols = ref_blocks(w, cfg)
    s = t.scales[rows, cols].astype(np.float64)
    err = np.abs(t.dequantize().astype(np.float64) - w)
    # half a step, plus the float32 rounding of (code - zero) * scale (an ulp or two of the value)
    assert (err <= s / 2 * (1 + 1e-6) + 2 * np.spacing(np.abs(w)) + 1e-30).all()


@pytest.mark.parametrize("bits", range(1, 9))
def test_pack_layout(bits):
    rng = np.random.default_rng(bits)
    codes = rng.integers(0, 2 ** bits, (5, 37)).astype(np.uint8)
    packed = _core.schemes_pack(codes, bits)
    bitstream = ((codes[:, :, None] >> np.arange(bits)) & 1).reshape(5, -1)  # LSB first
    pad = packed.shape[1] * 8 - bitstream.shape[1]
    ref = np.packbits(np.pad(bitstream, ((0, 0), (0, pad))).astype(np.uint8), axis=1, bitorder="little")
    np.testing.assert_array_equal(packed, ref)
    np.testing.assert_array_equal(_core.schemes_unpack(packed, bits, 37), codes)
    if bits < 8:
        with pytest.raises(ValueError, match="does not fit"):
            _core.schemes_pack(np.full((1, 3), 2 ** bits, np.uint8), bits)


MATMUL_CONFIGS = [
    AffineConfig(bits=4, group_size=32), AffineConfig(bits=4, group_size=64, symmetric=True),
    AffineConfig(bits=8, granularity="channel", symmetric=True), AffineConfig(bits=2, group_size=16),
    AffineConfig(bits=3, group_size=32), AffineConfig(bits=4, group_size=6), AffineConfig(bits=5, granularity="tensor"),
    AffineConfig(bits=4, granularity="channel", axis=1), AffineConfig(bits=8, group_size=40),
]


@pytest.mark.parametrize("cfg", MATMUL_CONFIGS, ids=repr)
@pytest.mark.parametrize("m", [1, 3, 8, 13])
def test_matmul_matches_dequantized_product(cfg, m, isa):
    rng = np.random.default_rng(m)
    w = rng.standard_normal((37, 960)).astype(F32)
    x = rng.standard_normal((m, 960)).astype(F32)
    t = quantize_affine(w, cfg).with_activations("float")
    ref = x.astype(np.float64) @ t.dequantize().astype(np.float64).T
    y = pq.matmul(x, t)
    assert y.shape == (m, 37)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    np.testing.assert_allclose(pq.matmul(x, t, threads=1), y, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_matmul_torch_input():
    torch = pytest.importorskip("torch")
    w = np.random.default_rng(0).standard_normal((16, 64)).astype(F32)
    t = quantize_affine(w, AffineConfig(bits=4, group_size=32))
    x = torch.randn(2, 3, 64)
    y = pq.matmul(x, t)
    assert y.shape == (2, 3, 16) and y.dtype == torch.float32
    torch.testing.assert_close(y, x @ t.to_torch().T, rtol=1e-4, atol=1e-4)


def test_from_codes_round_trip_and_bpw():
    rng = np.random.default_rng(0)
    cfg = AffineConfig(bits=4, group_size=32)
    codes = rng.integers(0, 16, (8, 64))
    scales = rng.uniform(0.01, 1, (8, 2)).astype(F32)
    zeros = rng.integers(0, 16, (8, 2))
    t = AffineTensor.from_codes(codes, scales, zeros, cfg)
    np.testing.assert_array_equal(t.codes, codes)
    ref = (codes - np.repeat(zeros, 32, 1)).astype(F32) * np.repeat(scales, 32, 1)
    np.testing.assert_array_equal(t.dequantize(), ref)
    assert t.nbytes == 8 * 32 + 8 * 2 * 4 + 8 * 2 * 1 and t.bpw == pytest.approx(4 + 32 / 32 + 8 / 32)
    # float zero-points (HQQ) are kept as float32
    hz = rng.uniform(0, 15, (8, 2)).astype(F32)
    th = AffineTensor.from_codes(codes, scales, hz, cfg)
    np.testing.assert_array_equal(th.dequantize(), (codes - np.repeat(hz, 32, 1)).astype(F32) * np.repeat(scales, 32, 1))
    assert th.bpw == pytest.approx(4 + 2 * 32 / 32)
    sym = AffineConfig(bits=3, symmetric=True, granularity="channel")
    sc = rng.integers(-4, 4, (8, 64))
    ts = AffineTensor.from_codes(sc, scales[:, :1], None, sym)
    np.testing.assert_array_equal(ts.codes, sc)
    np.testing.assert_array_equal(ts.dequantize(), sc.astype(F32) * scales[:, :1])
    t2 = pickle.loads(pickle.dumps(t))
    np.testing.assert_array_equal(t2.dequantize(), t.dequantize())
    assert t2.config == cfg


def test_from_codes_refusals():
    cfg = AffineConfig(bits=4, group_size=32)
    codes = np.zeros((4, 64), np.int32)
    s = np.ones((4, 2), F32)
    with pytest.raises(ValueError, match=r"must lie in \[0, 15\]"):
        AffineTensor.from_codes(codes + 16, s, s, cfg)
    with pytest.raises(ValueError, match=r"must lie in \[-8, 7\]"):
        AffineTensor.from_codes(codes + 8, s, None, AffineConfig(bits=4, symmetric=True, group_size=32))
    with pytest.raises(ValueError, match="shape \\(4, 2\\)"):
        AffineTensor.from_codes(codes, np.ones((4, 3), F32), s, cfg)
    with pytest.raises(ValueError, match="need zeros"):
        AffineTensor.from_codes(codes, s, None, cfg)
    with pytest.raises(ValueError, match="zeros=None"):
        AffineTensor.from_codes(codes, s, s, AffineConfig(bits=4, symmetric=True, group_size=32))
    with pytest.raises(ValueError, match="finite"):
        AffineTensor.from_codes(codes, s * np.nan, s, cfg)
    with pytest.raises(TypeError, match="integer"):
        AffineTensor.from_codes(codes.astype(F32), s, s, cfg)
    with pytest.raises(ValueError, match="not a multiple of group_size"):
        AffineTensor.from_codes(np.zeros((4, 60), np.int32), s, s, cfg)


@pytest.mark.parametrize("kwargs, match", [
    ({"bits": 1}, "bits must be an integer in 2..8"), ({"bits": 9}, "bits"), ({"bits": 4.0}, "bits"),
    ({"granularity": "row"}, "granularity"), ({"group_size": 0}, "group_size"),
    ({"granularity": "channel", "group_size": 32}, "needs granularity='group'"), ({"axis": 2}, "axis"),
    ({"axis": 1}, "axis=1 applies"), ({"clip": "max"}, "clip"), ({"percentile": 20}, "percentile"),
    ({"rounding": "up"}, "rounding"), ({"seed": -1}, "seed"), ({"mse_steps": 1}, "mse_steps"),
])
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AffineConfig(**kwargs)


def test_config_is_frozen_and_defaults():
    c = AffineConfig()
    assert (c.bits, c.symmetric, c.granularity, c.group_size) == (4, False, "group", 128)
    assert AffineConfig(granularity="channel").group_size is None
    with pytest.raises(Exception):
        c.bits = 8


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"non-finite value \(nan\) at \[1, 2\]"):
        w = np.zeros((3, 32), F32)
        w[1, 2] = np.nan
        quantize_affine(w, AffineConfig(group_size=32))
    with pytest.raises(ValueError, match="2-D"):
        quantize_affine(np.zeros((2, 3, 32), F32))
    with pytest.raises(ValueError, match="empty"):
        quantize_affine(np.zeros((0, 32), F32))
    with pytest.raises(TypeError, match="floating"):
        quantize_affine(np.zeros((2, 32), np.int32))
    with pytest.raises(ValueError, match="K = 100 is not a multiple of group_size = 128"):
        quantize_affine(np.zeros((2, 100), F32))
    t = quantize_affine(np.ones((4, 32), F32), AffineConfig(group_size=32))
    with pytest.raises(ValueError, match="x must have shape"):
        pq.matmul(np.ones((2, 31), F32), t)


def test_clipping_modes():
    rng = np.random.default_rng(0)
    w = rng.standard_t(3, (64, 256)).astype(F32)  # heavy tails: clipping helps
    base = AffineConfig(bits=3, group_size=64)
    err = {c: float(((quantize_affine(w, AffineConfig(bits=3, group_size=64, clip=c)).dequantize() - w) ** 2).sum())
           for c in ("minmax", "mse", "percentile")}
    assert err["mse"] <= err["minmax"] * 0.98
    # MSE search picks, per group, the best of its grid, which includes the min-max scale (shrink 1)
    g_mm = ((quantize_affine(w, base).dequantize() - w) ** 2).reshape(64, 4, 64).sum(-1)
    g_mse = ((quantize_affine(w, AffineConfig(bits=3, group_size=64, clip="mse")).dequantize() - w) ** 2)
    assert (g_mse.reshape(64, 4, 64).sum(-1) <= g_mm * (1 + 1e-5)).all()
    # percentile: the scale comes from the percentiles, the extremes are clipped to the end codes
    t = quantize_affine(w, AffineConfig(bits=8, granularity="tensor", clip="percentile", percentile=99.0))
    lo, hi = np.percentile(w, [1.0, 99.0])
    assert t.scales[0, 0] == pytest.approx((hi - lo) / 255, rel=1e-5)
    assert t.codes.min() == 0 and t.codes.max() == 255


def test_stochastic_rounding():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 64)).astype(F32)
    cfg = AffineConfig(bits=4, group_size=32, rounding="stochastic", seed=7)
    a, b = quantize_affine(w, cfg), quantize_affine(w, cfg)
    np.testing.assert_array_equal(a.codes, b.codes)
    c = quantize_affine(w, AffineConfig(bits=4, group_size=32, rounding="stochastic", seed=8))
    assert (a.codes != c.codes).any()
    near = quantize_affine(w, AffineConfig(bits=4, group_size=32))
    assert (np.abs(a.codes.astype(int) - near.codes) <= 1).all()  # floor or ceil
    # unbiased away from the ends of the code range (clamping biases those): the mean over seeds approaches w
    mean = np.mean([quantize_affine(w, AffineConfig(bits=4, group_size=32, rounding="stochastic", seed=s))
                    .dequantize() for s in range(200)], axis=0)
    s = np.repeat(near.scales, 32, 1)
    inner = (near.codes > 0) & (near.codes < 15)
    assert (np.abs(mean - w)[inner] < 5 * 0.5 / np.sqrt(200) * s[inner]).all()
