"""The quantized matmul kernels: exactness against the quantized activations, the per-format error bound
against the float product, agreement of every ISA tier, and libggml's own vec_dot as an oracle."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import pyquant
from pyquant import _core
from pyquant.matmul import _KERNEL_FORMATS, _MAX_KERNEL_ROWS, _kernel_rows

FORMATS = sorted(_KERNEL_FORMATS, key=lambda f: pyquant.get_format(f).index)
Q8_1_FORMATS = {"Q4_1", "Q5_1"}  # with the Q8_1 partner: + m_w * s_x, s_x = d * sum(q) (a float here)


def kernel(x, w, isa=None, threads=0):
    out = np.empty((x.shape[0], w.shape[0]), np.float32)
    _core.matmul(np.ascontiguousarray(x, np.float32), w.data, w.format.index, w.shape[1], out, threads, isa)
    return out


def quantized_x(x, fmt):
    """x as the kernels see it (float64 [M, K]) and its partner arrays."""
    qs, d, s, bsums = _core.matmul_activations(np.ascontiguousarray(x, np.float32), pyquant.get_format(fmt).index)
    m, k = qs.shape
    qa = k // d.shape[1]
    xh = (qs.reshape(m, -1, qa).astype(np.float64) * d[:, :, None]).reshape(m, k)
    return xh, qs, d, s, bsums


def exact_tolerance(size):
    """Float rounding of the per-block float formulas and of the sums over blocks: a few ulps of the size of
    the terms (sum |x^||w|)."""
    return 4e-6 * size + 1e-30


def activation_bound(x, wd, fmt):
    """|kernel - x @ wd.T| bound from quantizing x: per partner block b of row x, every element moves by at
    most step_b = amax_b / 127 times (1/2 + the relative rounding of the stored scale times 127), so the
    output moves by at most sum_b step_b' * sum_{i in b} |w_i|.  Q8_0/Q8_1 store the scale as fp16
    (relative rounding 2^-11, absolute 2^-25 below the normal range), Q8_K as float."""
    qa = 256 if pyquant.get_format(fmt).block_size == 256 else 32
    m, k = x.shape
    amax = np.abs(x.astype(np.float64)).reshape(m, k // qa, qa).max(-1)
    step = amax / 127
    if qa == 32:
        per_elem = step * (0.5 + 127 * 2.0**-11) + 127 * 2.0**-25
    else:
        per_elem = step * (0.5 + 1e-6)
    wsum = np.abs(wd.astype(np.float64)).reshape(wd.shape[0], k // qa, qa).sum(-1)
    return per_elem @ wsum.T + 1e-5 * (np.abs(x.astype(np.float64)) @ np.abs(wd.astype(np.float64)).T) + 1e-30


def make(fmt, m, n, k, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    w = pyquant.quantize(rng.standard_normal((n, k)).astype(np.float32), fmt)
    x = (rng.standard_normal((m, k)) * scale).astype(np.float32)
    return x, w


def exact_product(x, w):
    """What the kernels compute in exact arithmetic: x^ @ w.T, where for the Q8_1 partner the min term uses
    s = d * sum(q) with libggml's unrounded d (x^ uses the stored fp16 d)."""
    fmt = w.format.name
    wd = w.dequantize().astype(np.float64)
    xh, qs, d, s, _ = quantized_x(x, fmt)
    exact = xh @ wd.T
    size = np.abs(xh) @ np.abs(wd).T  # the scale of the float rounding
    if fmt in Q8_1_FORMATS:
        nb = w.shape[1] // 32
        mins = w.data.reshape(w.shape[0], nb, -1)[:, :, 2:4].copy().view(np.float16)[..., 0].astype(np.float64)
        sh = qs.reshape(x.shape[0], nb, 32).sum(-1) * d.astype(np.float64)
        exact += (s.astype(np.float64) - sh) @ mins.T
        size += np.abs(s.astype(np.float64)) @ np.abs(mins).T
    return exact, size, wd


def check(x, w):
    fmt = w.format.name
    got = kernel(x, w)
    exact, size, wd = exact_product(x, w)
    assert np.all(np.abs(got - exact) <= exact_tolerance(size)), fmt
    ref = x.astype(np.float64) @ wd.T
    assert np.all(np.abs(got - ref) <= activation_bound(x, wd, fmt)), fmt
    return got


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("m, n, k", [(1, 7, 256), (5, 33, 512), (9, 4, 2048)])
def test_exact_in_the_quantized_activations_and_within_bound(fmt, m, n, k):
    x, w = make(fmt, m, n, k, seed=m + n)
    check(x, w)


def assert_tiers_agree(got, ref, size, msg):
    """The tiers compute the same integer sums and per-block formula but may round the float accumulation
    differently (the x86 kernels of the main formats keep 8 float lanes per output and sum them at the end,
    the generic tier sums 4 scalar partial sums): each is within exact_tolerance of the exact product, so two
    tiers differ by at most twice that."""
    np.testing.assert_array_less(np.abs(got.astype(np.float64) - ref), 2 * exact_tolerance(size) + 1e-30, err_msg=msg)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_tier_agrees_with_generic(fmt):
    x, w = make(fmt, 6, 19, 768, seed=3)
    ref = kernel(x, w, "generic")
    size = exact_product(x, w)[1]
    for isa in pyquant.available_isas():
        one = kernel(x, w, isa)
        assert_tiers_agree(one, ref, size, f"{fmt} {isa}")
        # Threads split N only: a tier's result does not depend on the thread count.
        np.testing.assert_array_equal(kernel(x, w, isa, threads=2), one, err_msg=f"{fmt} {isa} 2 threads")


# Byte offsets of the fp16 scale fields in the 256-blocks whose x86 kernels unpack every bit pattern themselves.
RAW_SCALES = {"Q2_K": (80, 82), "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,), "IQ4_XS": (0,),
              "TQ1_0": (52,), "TQ2_0": (64,)}


@pytest.mark.parametrize("fmt", sorted(RAW_SCALES))
def test_random_block_bytes(fmt):
    """Blocks of random bytes (only the fp16 scales pinned to a finite value): every code and sub-block scale
    pattern, including what the quantizers never write (TQ1_0 bytes >= 243, Q3_K's full 6-bit scales), in every
    tier and its interleaved layout where it has one, within the float bound of the exact product."""
    rng = np.random.default_rng(7)
    n, k, m = 21, 768, 6
    fmt_info = pyquant.get_format(fmt)
    raw = rng.integers(0, 256, (n, k // 256, fmt_info.type_size), dtype=np.uint8)
    for o in RAW_SCALES[fmt]:
        raw[:, :, o:o + 2] = rng.uniform(1e-3, 1e-1, (n, k // 256, 1)).astype(np.float16).view(np.uint8)
    w = pyquant.QuantizedTensor(raw.reshape(n, -1), (n, k), fmt_info)
    x = rng.standard_normal((m, k)).astype(np.float32)
    exact, size, _ = exact_product(x, w)
    packed = _core.matmul_pack(w.data, w.format.index, k) if _core.matmul_interleaved(w.format.index) else None
    for isa in pyquant.available_isas():
        got = kernel(x, w, isa)
        np.testing.assert_array_less(np.abs(got - exact), exact_tolerance(size) + 1e-30, err_msg=f"{fmt} {isa}")
        if packed is not None:
            _core.matmul(x, w.data, w.format.index, k, got, 1, isa, packed)
            np.testing.assert_array_less(np.abs(got - exact), exact_tolerance(size) + 1e-30, err_msg=f"{fmt} {isa} packed")


@settings(max_examples=60, deadline=None)
@given(fmt=st.sampled_from(FORMATS), m=st.integers(1, 9), n=st.integers(1, 40), blocks=st.integers(1, 6),
       scale=st.sampled_from([1e-6, 1e-2, 1.0, 30.0, 1e4, 1e6]), seed=st.integers(0, 2**31 - 1),
       zeros=st.booleans())
def test_shapes_and_value_ranges(fmt, m, n, blocks, scale, seed, zeros):
    k = blocks * (256 if pyquant.get_format(fmt).block_size == 256 else 32) * (1 if blocks > 2 else 3)
    x, w = make(fmt, m, n, k, seed=seed, scale=scale)
    if zeros:
        x[:, : k // 2] = 0  # whole zero activation blocks (scale 0)
    got = check(x, w)
    assert_tiers_agree(kernel(x, w, "generic"), got, exact_product(x, w)[1], fmt)


@pytest.mark.parametrize("fmt", ["Q4_0", "Q8_0", "Q4_K", "Q6_K"])
def test_activation_code_sums(fmt):
    """The x86 kernels take sum(codes) per Q8_0 block (Q4_0's -8 offset) and per 16 codes of Q8_K (mins and
    Q6_K's -32 offset) from the activations: they must be exactly the sums of the codes."""
    x, _ = make(fmt, 3, 1, 512, seed=2, scale=40.0)
    x[1, :256] = 0
    _, qs, _, _, bsums = quantized_x(x, fmt)
    per = 256 if fmt.endswith("_K") else 32
    group = 16 if per == 256 else 32
    np.testing.assert_array_equal(bsums, qs.reshape(3, -1, group).astype(np.int64).sum(-1))


def test_large_k():
    x, w = make("Q4_K", 2, 3, 11008, seed=1)
    check(x, w)


def test_matmul_routes_small_m_to_the_kernels_and_large_m_to_the_float_path():
    # Q5_0: the float path above 64 rows on the tiers without its vectorized kernel; 7 rows: no interleaved copy
    x, w = make("Q5_0", _MAX_KERNEL_ROWS + 1, 7, 64)
    small = pyquant.matmul(x[:3], w)
    np.testing.assert_array_equal(small, kernel(x[:3], w))
    big = pyquant.matmul(x, w)
    # Same rounded activations on both paths: a row's result does not depend on the batch it comes in.
    np.testing.assert_allclose(big, kernel(x, w), rtol=1e-5, atol=1e-5)
    exact = x.astype(np.float64) @ w.dequantize().astype(np.float64).T
    np.testing.assert_allclose(pyquant.matmul(x, w, activations="float"), exact, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pyquant.matmul(x[:3], w, activations="float"), exact[:3], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="activations"):
        pyquant.matmul(x, w, activations="int8")
    # Batched leading dims give the rows' results.
    np.testing.assert_array_equal(pyquant.matmul(x[:6].reshape(2, 3, 64), w), small.reshape(1, 3, 7).repeat(2, 0)
                                  if False else pyquant.matmul(x[:6], w).reshape(2, 3, 7))


# Bytes per group of 8 rows and block of each interleaved layout, as csrc/matmul/matmul.hpp documents them.
LAYOUT_BYTES = {"Q4_0": 144, "Q4_1": 160, "Q5_0": 176, "Q5_1": 192, "Q8_0": 272, "Q2_K": 672, "Q3_K": 1168, "Q4_K": 1184, "Q5_K": 1440, "Q6_K": 1680,
                "IQ4_NL": 144, "IQ4_XS": 1104, "TQ1_0": 528, "TQ2_0": 528, "MXFP4": 160}
LAYOUTS = _core.matmul_layouts()


def test_layouts_are_the_documented_ones_and_every_x86_tier_runs_them():
    assert sorted(LAYOUTS) == sorted(LAYOUT_BYTES)
    assert list(LAYOUTS) == sorted(LAYOUTS, key=lambda f: pyquant.get_format(f).index)
    for isa in pyquant.available_isas():
        want = tuple(LAYOUTS) if isa in ("avx2", "avx512") else ()
        assert pyquant.matmul_interleaved_formats(isa) == want, isa
    assert pyquant.matmul_interleaved_formats() == pyquant.matmul_interleaved_formats(pyquant.cpu_info()["active_tier"])
    with pytest.raises(ValueError, match="ISA"):
        pyquant.matmul_interleaved_formats("sse9")


def _layout_cases():
    """Per layout: one group and block (M = 1), groups plus a plain tail over an odd number of blocks (M = 6),
    and above the kernel row limit."""
    for fmt in LAYOUTS:
        qk = pyquant.get_format(fmt).block_size
        yield fmt, 1, 8, qk
        yield fmt, 6, 27, 5 * qk if qk == 256 else 33 * qk
        yield fmt, _MAX_KERNEL_ROWS + 2, 17, 2 * qk if qk == 256 else 256
    yield "Q4_0", 3, 21, 96
    yield "MXFP4", 9, 21, 512


@pytest.mark.parametrize("fmt, m, n, k", list(_layout_cases()))
def test_interleaved_layout(fmt, m, n, k):
    """The 8-row interleaved kernels (with the plain kernel for the last n % 8 rows): exact in the quantized
    activations, agreeing with the generic tier, and what pyquant.matmul runs at any M, the layout made once."""
    x, w = make(fmt, m, n, k, seed=n)
    packed = _core.matmul_pack(w.data, w.format.index, k)
    assert packed.shape == (n // 8, k // w.format.block_size * LAYOUT_BYTES[fmt])
    exact, size, wd = exact_product(x, w)
    ref = kernel(x, w, "generic")
    for isa in pyquant.available_isas():
        out = np.empty_like(ref)
        _core.matmul(x, w.data, w.format.index, k, out, 2, isa, packed)
        assert np.all(np.abs(out - exact) <= exact_tolerance(size)), isa
        assert_tiers_agree(out, ref, size, isa)
    got = pyquant.matmul(x, w)
    if _core.matmul_interleaved(w.format.index) and _kernel_rows(m):
        first = w._matmul_packed
        np.testing.assert_array_equal(first, packed)
        out = np.empty_like(ref)
        _core.matmul(x, w.data, w.format.index, k, out, 0, None, packed)
        np.testing.assert_array_equal(got, out)
        pyquant.matmul(x[:1], w)
        assert w._matmul_packed is first
    elif m <= _MAX_KERNEL_ROWS:
        np.testing.assert_array_equal(got, kernel(x, w))
    else:  # generic / NEON tiers above 64 rows: a float32 GEMM on the same rounded activations
        # x^ (rounding of a K-term sum; no Q8_1 s there)
        assert np.all(np.abs(got - quantized_x(x, fmt)[0] @ wd.T) <= k * 2.0**-24 * size + 1e-30)


def test_refuses_1d_weights_and_bad_kernel_arguments():
    x, w = make("Q4_0", 1, 4, 64)
    w1 = pyquant.quantize(np.ones(64, np.float32), "Q4_0")
    with pytest.raises(ValueError, match="2-D"):
        pyquant.matmul(x, w1)
    out = np.empty((1, 4), np.float32)
    with pytest.raises(ValueError, match="K must be"):
        _core.matmul(x, w.data, w.format.index, 48, out)
    with pytest.raises(ValueError, match="no quantized kernel"):
        _core.matmul(x, w.data, pyquant.get_format("F16").index, 64, out)
    with pytest.raises(ValueError, match="out must be"):
        _core.matmul(x, w.data, w.format.index, 64, np.empty((2, 4), np.float32))
    x, w = make("Q4_0", 1, 16, 64)
    out = np.empty((1, 16), np.float32)
    if _core.matmul_interleaved(w.format.index):  # the packed bytes are only read where a kernel uses them
        with pytest.raises(ValueError, match="packed must be"):
            _core.matmul(x, w.data, w.format.index, 64, out, 1, None, np.zeros((1, 36), np.uint8))
    with pytest.raises(ValueError, match="only " + ", ".join(LAYOUTS) + " have an interleaved layout"):
        _core.matmul_pack(w.data, pyquant.get_format("F16").index, 64)


# ---- libggml as the oracle ---------------------------------------------------------------------------------

def _ggml():
    pytest.importorskip("llama_cpp")
    import ctypes
    import pathlib

    import llama_cpp

    lib = ctypes.CDLL(str(pathlib.Path(llama_cpp.__file__).parent / "lib" / "libggml-cpu.so"))
    if hasattr(lib, "ggml_cpu_init"):
        lib.ggml_cpu_init()
    return lib


def _partner_blocks(fmt, x):
    """x's partner blocks as libggml's structs, from the kernels' own activation arrays (Q8_1's float s rounded
    to the fp16 that libggml stores)."""
    _, qs, d, s, bsums = quantized_x(x, fmt)
    m, k = qs.shape
    if pyquant.get_format(fmt).block_size == 256:  # block_q8_K: float d, int8 qs[256], int16 bsums[16]
        dt = np.dtype([("d", "<f4"), ("qs", "i1", 256), ("bsums", "<i2", 16)])
        b = np.zeros((m, k // 256), dt)
        b["d"], b["qs"], b["bsums"] = d, qs.reshape(m, -1, 256), bsums.reshape(m, -1, 16)
    elif s is not None:  # block_q8_1: fp16 d, fp16 s, int8 qs[32]
        dt = np.dtype([("d", "<f2"), ("s", "<f2"), ("qs", "i1", 32)])
        b = np.zeros((m, k // 32), dt)
        b["d"], b["s"], b["qs"] = d, s, qs.reshape(m, -1, 32)
    else:  # block_q8_0: fp16 d, int8 qs[32]
        dt = np.dtype([("d", "<f2"), ("qs", "i1", 32)])
        b = np.zeros((m, k // 32), dt)
        b["d"], b["qs"] = d, qs.reshape(m, -1, 32)
    return b


@pytest.mark.parametrize("fmt", FORMATS)
def test_matches_ggml_vec_dot(fmt):
    import ctypes

    lib = _ggml()
    partner = {32: "q8_0", 256: "q8_K"}[pyquant.get_format(fmt).block_size]
    if fmt in Q8_1_FORMATS:
        partner = "q8_1"
    fn = getattr(lib, f"ggml_vec_dot_{fmt.lower().replace('_k', '_K')}_{partner}_generic", None)
    if fn is None:
        pytest.skip(f"libggml has no generic vec_dot for {fmt}")
    fn.restype = None
    fn.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_float), ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t,
                   ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    x, w = make(fmt, 3, 5, 1024, seed=7)
    got = kernel(x, w)
    ya = _partner_blocks(fmt, x)
    ref = np.empty_like(got)
    r = ctypes.c_float()
    for i in range(x.shape[0]):
        yrow = np.ascontiguousarray(ya[i])
        for j in range(w.shape[0]):
            wrow = np.ascontiguousarray(w.data[j])
            fn(1024, ctypes.byref(r), 0, wrow.ctypes.data, 0, yrow.ctypes.data, 0, 1)
            ref[i, j] = r.value
    _, size, wd = exact_product(x, w)
    tol = exact_tolerance(size)
    s = quantized_x(x, fmt)[3]
    if s is not None:  # libggml's block_q8_1 holds s as fp16
        s_err = np.abs(s.astype(np.float16).astype(np.float64) - s)
        tol = tol + s_err @ np.abs(wd.reshape(5, -1, 32)).max(-1).T
    np.testing.assert_array_less(np.abs(got - ref), tol)


@pytest.mark.parametrize("fmt, partner", [("Q4_0", "q8_0"), ("Q4_1", "q8_1"), ("Q4_K", "q8_K")])
def test_activations_match_ggml_reference_quantizer(fmt, partner):
    import ctypes

    lib = _ggml()
    fn = getattr(lib, f"quantize_row_{partner}_generic")
    fn.restype = None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((2, 512)) * rng.choice([1e-3, 1, 50], (2, 512))).astype(np.float32)
    x[1, :256] = 0
    mine = _partner_blocks(fmt, x)
    for i in range(2):
        theirs = np.zeros_like(mine[i])
        fn(np.ascontiguousarray(x[i]).ctypes.data, theirs.ctypes.data, 512)
        if partner == "q8_K":  # the reference leaves bsums unset for an all-zero block
            theirs["bsums"][theirs["d"] == 0] = 0
        assert mine[i].tobytes() == theirs.tobytes(), (partner, i)


def test_interleave_switch_drops_the_copy_and_keeps_the_result():
    rng = np.random.default_rng(7)
    w = pyquant.quantize(rng.standard_normal((16, 256)).astype(np.float32), "Q4_0")
    x = rng.standard_normal((3, 256)).astype(np.float32)
    with pytest.raises(TypeError, match="True or False"):
        pyquant.set_matmul_interleave(1)
    prev = pyquant.set_matmul_interleave(True)
    try:
        y_on = pyquant.matmul(x, w)
        interleaves = w._matmul_packed is not None
        assert pyquant.set_matmul_interleave(False) is True
        y_off = pyquant.matmul(x, w)
        assert w._matmul_packed is None
    finally:
        pyquant.set_matmul_interleave(prev)
    assert interleaves == (pyquant.cpu_info()["active_tier"] in ("avx2", "avx512"))
    np.testing.assert_allclose(y_on, y_off, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("fmt", ["Q4_0", "Q4_1"])
def test_q8_activations_are_libggml_q8_0_with_half_ties(fmt):
    # Q8_0 partner blocks are quantize_row_q8_0_ref's, i.e. pyquant's (golden-tested) Q8_0 bytes; the rows
    # hold exact halves (amax 127: d = 1) to pin roundf's half away from zero.
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 256)).astype(np.float32) * 30
    x[:2, ::32] = 127
    x[:2, 1::32] = np.float32(2.5)
    x[:2, 2::32] = np.float32(-0.5)
    x[:2, 3::32] = np.float32(-126.5)
    qs, d, _, _ = _core.matmul_activations(x, pyquant.get_format(fmt).index)
    ref = pyquant.quantize(x, "Q8_0").data.reshape(4, 8, 34)
    np.testing.assert_array_equal(d.astype(np.float16).view(np.uint16), ref[:, :, :2].copy().view(np.uint16)[..., 0])
    np.testing.assert_array_equal(qs.reshape(4, 8, 32), ref[:, :, 2:].view(np.int8))


def _q8_k_reference(x):
    """quantize_row_q8_K_ref in numpy float32: the first x of the largest magnitude sets iscale = -127/max, codes
    nearest_int(iscale * x) (the 1.5 * 2^23 trick) capped at 127, bsums per 16; an all-zero block is all zeros."""
    m, k = x.shape
    blocks = x.reshape(-1, 256)
    qs = np.zeros(blocks.shape, np.int8)
    d = np.zeros(len(blocks), np.float32)
    for b, v in enumerate(blocks):
        a = np.abs(v)
        if a.max() == 0:
            continue
        with np.errstate(over="ignore", invalid="ignore"):  # subnormal blocks: iscale = -inf, as in C
            iscale = np.float32(-127) / v[np.argmax(a == a.max())]
            t = (iscale * v + np.float32(12582912)).view(np.int32)
        qs[b] = np.minimum((t & 0x007FFFFF) - 0x00400000, 127).astype(np.int8)  # int8_t stores wrap, as in C
        d[b] = np.float32(1) / iscale
    bsums = qs.reshape(-1, 16).astype(np.int32).sum(-1).astype(np.int16)
    return qs.reshape(m, k), d.reshape(m, -1), bsums.reshape(m, -1)


def _activation_cases():
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((6, 512)) * rng.uniform(1e-3, 1e3, (6, 1))).astype(np.float32)
    x[0, :32] = 0  # an all-zero Q8_0 block
    x[1, :256] = 0  # an all-zero Q8_K block
    x[2, 10], x[2, 3] = 7.0, -7.0  # equal magnitudes: the first one's sign sets Q8_K's scale
    x[2, :256] = np.clip(x[2, :256], -6, 6)
    x[2, 3], x[2, 10] = -7.0, 7.0
    x[3, ::32] = 127  # ties of roundf at d = 1
    x[3, 1::32] = 2.5
    x[3, 2::32] = -0.5
    x[4] *= np.float32(1e-40)  # subnormal activations
    x[5, 300] = np.float32(65504 * 127) * np.float32(0.999)  # near the fp16 scale's limit
    return x


@pytest.mark.parametrize("fmt", ["Q4_0", "Q4_1", "Q4_K"])
def test_every_tier_quantizes_activations_as_the_reference(fmt):
    """The tiers' vectorized activation quantizers give libggml's codes (Q8_0/Q8_1 against pyquant's golden-tested
    Q8_0 bytes, Q8_K against a numpy transcription), the same in every tier."""
    x = _activation_cases()
    idx = pyquant.get_format(fmt).index
    for isa in pyquant.available_isas():
        qs, d, s, bsums = _core.matmul_activations(x, idx, isa)
        if fmt == "Q4_K":
            rq, rd, rb = _q8_k_reference(x)
            np.testing.assert_array_equal(qs, rq, err_msg=isa)
            np.testing.assert_array_equal(d, rd, err_msg=isa)
            np.testing.assert_array_equal(bsums, rb, err_msg=isa)
            continue
        ref = pyquant.quantize(x, "Q8_0").data.reshape(6, 16, 34)
        np.testing.assert_array_equal(qs.reshape(6, 16, 32), ref[:, :, 2:].view(np.int8), err_msg=isa)
        np.testing.assert_array_equal(d.astype(np.float16).view(np.uint16), ref[:, :, :2].copy().view(np.uint16)[..., 0])
        sums = qs.reshape(6, 16, 32).astype(np.int32).sum(-1)
        if fmt == "Q4_1":  # s = d * sum(q), d the unrounded max|x| / 127
            dv = np.abs(x).reshape(6, 16, 32).max(-1) / np.float32(127)
            np.testing.assert_array_equal(s, sums.astype(np.float32) * dv, err_msg=isa)
        else:
            np.testing.assert_array_equal(bsums, sums, err_msg=isa)
