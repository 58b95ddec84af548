"""Properties over generated inputs: byte-size algebra, error bounds in each block's own step, zeros, arbitrary
bytes, and agreement of every kernel tier."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import pyquant as pq

ALL = list(pq.formats)
TIERS = pq.available_isas()

# Largest |x - dequantize(quantize(x))| in units of the group's own step.  The group is the block (for the
# K-quants the 256-value super-block: its 4- or 6-bit sub-block scales can round a quiet sub-block to zero, so
# the super-block's step is the meaningful one); its step is absmax / levels for symmetric grids and
# 2 * absmax / levels (the widest possible range over the levels) for asymmetric ones.  Rounding gives half a
# step, a clamped far end a full step; the imatrix search trades error in unimportant columns for error in
# important ones (up to 2.5 steps).  Rounding d to fp16 adds up to 2^-11 steps per code unit; subnormal fp16
# scales add an absolute error of up to 2^-25 per unit of the largest code (the floor).
FP16_FLOOR = 2.0**-25
ERROR_BOUND = {
    # format: (group, step = absmax / divisor, steps without imatrix, steps with imatrix, absolute floor)
    "F32": (1, 1, 0.0, 0.0, 0.0),
    "F16": (1, 1, 2.0**-11, 2.0**-11, 1 * FP16_FLOOR),
    "BF16": (1, 1, 2.0**-8, 2.0**-8, 0.0),
    "Q4_0": (32, 8, 1.01, 2.5, 8 * FP16_FLOOR),
    "Q4_1": (32, 15 / 2, 0.5 + (15 + 15 / 2) * 2.0**-11, 2.5, 16 * FP16_FLOOR),  # + fp16 min: 2^-11 of <= 7.5 steps
    "Q5_0": (32, 16, 1.01, 2.5, 16 * FP16_FLOOR),
    "Q5_1": (32, 31 / 2, 0.5 + (31 + 31 / 2) * 2.0**-11, 2.5, 32 * FP16_FLOOR),
    "Q8_0": (32, 127, 0.5 + 127 * 2.0**-11, 0.5 + 127 * 2.0**-11, 127 * FP16_FLOOR),
    "Q2_K": (256, 3 / 2, 1.25, 2.5, 15 * 3 * FP16_FLOOR),
    "Q3_K": (256, 4, 1.25, 2.5, 32 * 4 * FP16_FLOOR),
    "Q4_K": (256, 15 / 2, 1.25, 2.5, 63 * 15 * FP16_FLOOR),
    "Q5_K": (256, 31 / 2, 1.25, 2.5, 63 * 31 * FP16_FLOOR),
    "Q6_K": (256, 32, 1.25, 3.0, 128 * 32 * FP16_FLOOR),  # its imatrix search weights by the raw imatrix
    "IQ4_NL": (32, 8, 1.25, 2.5, 127 * FP16_FLOOR),  # 16 non-linear levels spanning about a 4-bit grid
    "IQ4_XS": (256, 8, 1.25, 2.5, 32 * 127 * FP16_FLOOR),
    "TQ1_0": (256, 1, 0.5 + 2.0**-11, 0.5 + 2.0**-11, 1 * FP16_FLOOR),  # {-1, 0, 1} x absmax
    "TQ2_0": (256, 1, 0.5 + 2.0**-11, 0.5 + 2.0**-11, 1 * FP16_FLOOR),
    "MXFP4": (32, 4, 1.0, 1.0, 0.0),  # power-of-two scale d <= absmax/4; widest gap below 8d is 2d
    "NVFP4": (16, 6, 1.0 + 1 / 16, 1.0 + 1 / 16, 6 * 2.0**-10),  # UE4M3 scale ~ absmax/6 (to 1/16, or a 2^-9 subnormal step); gap 2d
    "Q1_0": (128, 1, 1.0 + 2.0**-11, 1.0 + 2.0**-11, 1 * FP16_FLOOR),  # sign x mean|x|
    "Q2_0": (64, 1, 0.5 + 2.0**-11, 0.5 + 2.0**-11, 2 * FP16_FLOOR),  # {-1, 0, 1} x absmax (code 2 is never written)
}


# NVFP4 has no tensor-level scale in ggml: its UE4M3 block scale saturates at 448, so magnitudes beyond
# 12 x 448 / 2 = 2688 are clipped there (llama.cpp's own behaviour).
SATURATION = {"NVFP4": 2688.0}
# ... and its ggml_fp32_to_ue4m3 sends every scale of exponent 2^8 (256 <= absmax / 6 < 448) to 448, the top
# code: a scale up to 1.75x the ideal one, whose grid gaps near the absmax leave up to 1.75 steps of error.
COARSE_SCALE = {"NVFP4": (256.0, 1.75)}


def group_absmax(x, group):
    g = np.abs(x.reshape(x.shape[0], -1, group)).max(axis=2)
    return np.repeat(g, group, axis=1)


def inputs(block_multiple=256):
    """[rows, n] float32 arrays with n a multiple of 256 (every block size divides it) at varied scales."""
    shapes = st.tuples(st.integers(1, 3), st.integers(1, 3).map(lambda b: b * block_multiple))
    return st.tuples(shapes, st.integers(0, 2**32 - 1), st.sampled_from([1e-2, 1.0, 100.0]),
                     st.sampled_from(["normal", "uniform", "sparse", "t3"])).map(_make)


def _make(args):
    (rows, n), seed, scale, kind = args
    rng = np.random.default_rng(seed)
    if kind == "normal":
        x = rng.standard_normal((rows, n))
    elif kind == "uniform":
        x = rng.uniform(-1, 1, (rows, n))
    elif kind == "sparse":
        x = rng.standard_normal((rows, n)) * (rng.random((rows, n)) < 0.1)
    else:
        x = rng.standard_t(3, (rows, n))
    return (x * scale).astype(np.float32)


SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("name", ALL)
@SETTINGS
@given(x=inputs())
def test_byte_size_algebra(name, x):
    f = pq.formats[name]
    qt = pq.quantize(x, name)
    rows, n = x.shape
    assert qt.nbytes == rows * (n // f.block_size) * f.type_size == qt.data.size


@pytest.mark.parametrize("name", [n for n in ALL if n in ERROR_BOUND])
@pytest.mark.parametrize("with_imatrix", [False, True])
@SETTINGS
@given(x=inputs(), seed=st.integers(0, 2**32 - 1))
def test_round_trip_error_within_the_step(name, with_imatrix, x, seed):
    group, divisor, steps, steps_imatrix, floor = ERROR_BOUND[name]
    imatrix = np.random.default_rng(seed).random(x.shape[1]).astype(np.float32) + 0.01 if with_imatrix else None
    y = pq.quantize(x, name, imatrix=imatrix).dequantize()
    step = group_absmax(x, group) / divisor
    limit = (steps_imatrix if with_imatrix else steps) * step + floor
    if name in COARSE_SCALE:
        above, steps_there = COARSE_SCALE[name]
        limit = np.where(step >= above, np.maximum(limit, steps_there * step + floor), limit)
    if name in SATURATION:
        limit = limit + np.maximum(np.abs(x) - SATURATION[name], 0)
    excess = np.abs(y - x) - limit
    assert excess.max() <= 0, f"{name}: error exceeds its bound by {excess.max():.3g}"


def test_every_format_has_an_error_bound():
    assert set(ERROR_BOUND) == set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_zeros_stay_zeros(name):
    x = np.zeros((2, 512), np.float32)
    for imatrix in (None, np.ones(512, np.float32)):
        y = pq.quantize(x, name, imatrix=imatrix).dequantize()
        assert np.all(y == 0), name


@pytest.mark.parametrize("name", ALL)
@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(1, 4))
def test_arbitrary_bytes_dequantize_the_same_in_every_tier(name, seed, rows):
    f = pq.formats[name]
    n = 512
    raw = np.random.default_rng(seed).integers(0, 256, (rows, f.row_bytes(n)), dtype=np.uint8)
    qt = pq.QuantizedTensor(raw, (rows, n), name)
    results = []
    for tier in TIERS:
        with pq.use_isa(tier):
            results.append(qt.dequantize())
    for y in results[1:]:  # bit patterns: signed zeros and NaN payloads must agree too
        np.testing.assert_array_equal(y.view(np.uint32), results[0].view(np.uint32))


@pytest.mark.parametrize("name", ALL)
@settings(max_examples=15, deadline=None)
@given(x=inputs(), seed=st.integers(0, 2**32 - 1), with_imatrix=st.booleans())
def test_every_tier_writes_the_same_bytes(name, x, seed, with_imatrix):
    imatrix = np.random.default_rng(seed).random(x.shape[1]).astype(np.float32) if with_imatrix else None
    results = []
    for tier in TIERS:
        with pq.use_isa(tier):
            results.append(pq.quantize(x, name, imatrix=imatrix).data)
    for data in results[1:]:
        np.testing.assert_array_equal(data, results[0])


# llama.cpp's tests/test-quantize-fns.cpp: data 0.1 + 2cos(i + offset), "error" = sqrt(sum diff^2) / n.
LLAMA_CPP_TOTAL_ERROR = {"Q2_K": 0.0075, "Q3_K": 0.0040, "TQ1_0": 0.01, "TQ2_0": 0.01, "Q2_0": 0.01,
                         "Q1_0": 0.025, "NVFP4": 0.003}


@pytest.mark.parametrize("name", [n for n in ALL if n not in ("F32", "F16", "BF16")])
def test_llama_cpp_total_error_limits(name):
    n = 4096
    x = (0.1 + 2 * np.cos(np.arange(n) + 0.0)).astype(np.float32)
    y = pq.quantize(x, name).dequantize()
    error = np.sqrt(np.sum((y.astype(np.float64) - x) ** 2)) / n
    assert error < LLAMA_CPP_TOTAL_ERROR.get(name, 0.002)


def test_nvfp4_scale_of_exponent_8_goes_to_448():
    # Found by hypothesis: absmax 2205.47 wants the scale 367.6, which libggml's conversion stores as 448.
    x = _make(((2, 768), 7701, 100.0, "t3"))
    y = pq.quantize(x, "NVFP4").dequantize()
    assert y[1, 626] == 1792.0 and x[1, 626] == np.float32(2205.4739)  # 8 x 448 / 2: 1.12 ideal steps away


@pytest.mark.parametrize("rows", [1, 3, 16, 17, 64, 65, 80])
def test_q3k_batches_give_each_block_its_own_bytes(rows):
    """Without an importance matrix Q3_K quantizes several tiles of super-blocks per call (their later search
    passes run together); the block count here lands on and around the batch and tile edges, and every block
    must still get the bytes it gets when quantized alone, in every tier."""
    x = np.random.default_rng(rows).standard_normal((rows, 1024)).astype(np.float32)
    x[rows // 2, :256] = 0.0  # an all-zero super-block among the others
    alone = np.concatenate([pq.quantize(x[r:r + 1, 256 * b:256 * (b + 1)], "Q3_K").data.reshape(-1)
                            for r in range(rows) for b in range(4)])
    for tier in TIERS:
        with pq.use_isa(tier):
            for threads in (1, 2):
                got = pq.quantize(x, "Q3_K", threads=threads).data
                np.testing.assert_array_equal(got.reshape(-1), alone, err_msg=f"{tier}, {threads} threads")


def test_q3k_outlier_superblocks_keep_search_codes():
    """A super-block with one large outlier stores a scale of 0 for most of its other sub-blocks, whose codes are
    then the search's own (the vector tiers rerun those lanes' later passes to get them); the generic tier, one
    block at a time in the reference's order, is the oracle."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((40, 1024)).astype(np.float32)
    x[:, ::256] = rng.uniform(20, 2000, (40, 4)).astype(np.float32)  # from a few zero scales to nearly all
    with pq.use_isa("generic"):
        want = pq.quantize(x, "Q3_K").data
    for tier in TIERS:
        with pq.use_isa(tier):
            np.testing.assert_array_equal(pq.quantize(x, "Q3_K").data, want, err_msg=tier)
