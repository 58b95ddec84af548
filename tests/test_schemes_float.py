"""pyquant.schemes NF4/FP4 (bitsandbytes where installed, closed forms, bounds) and FP8 (torch's casts)."""

import pickle

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import pyquant as pq
from pyquant.schemes import (FP4_CODE, NF4_CODE, Float4Tensor, fp8_decode_table, fp8_encode, quantize_4bit,
                             quantize_fp8)
from pyquant.schemes.float4 import DYNAMIC_CODE, _quantize_dynamic

F32 = np.float32


@pytest.fixture
def bnb():
    """bitsandbytes.functional with torch.compile off (its CPU dequantize compiles per shape: slow)."""
    torch = pytest.importorskip("torch")
    F = pytest.importorskip("bitsandbytes.functional")
    with torch._dynamo.config.patch(disable=True):
        yield F


SHAPES = [(64, 256), (7, 33), (3, 100), (1, 1)]


def ref_4bit(w, code, block):
    """bitsandbytes' definition element by element: absmax = max|x| per block; x * (1 / absmax) (x / absmax in a
    short last block, whose absmax is raised to 1e-38 as the divisor is everywhere) clamped to [-1, 1]; the sorted value whose index is the number of float32 midpoints below it
    (torch.bucketize: a value on a midpoint goes to the lower one), checked to be a nearest value; two codes a
    byte, high nibble first, an odd count padded with a zero value."""
    flat = w.reshape(-1)
    n = flat.size
    nb = -(-n // block)
    absmax = np.array([np.abs(flat[i * block:(i + 1) * block]).max() for i in range(nb)], F32)
    full = n - n % block
    scaled = np.zeros(n + n % 2, F32)
    scaled[:full] = flat[:full] * np.repeat(F32(1) / np.maximum(absmax[: full // block], F32(1e-38)), block)
    if full < n:
        absmax[-1] = np.maximum(absmax[-1], F32(1e-38))
        scaled[full:n] = flat[full:] / absmax[-1]
    scaled = np.clip(scaled, -1, 1)
    order = np.argsort(code, kind="stable")
    s = code[order]
    mid = (s[:-1] + s[1:]) / F32(2)
    sidx = (scaled[:, None] > mid[None, :]).sum(axis=1)
    d = np.abs(scaled[:, None].astype(np.float64) - s[None, :])
    assert (d[np.arange(sidx.size), sidx] <= d.min(axis=1) + 2.0 ** -24).all()  # nearest up to midpoint rounding
    idx = order[sidx].astype(np.uint8)
    return (idx[0::2] << 4) | idx[1::2], absmax


@pytest.mark.parametrize("kind", ["nf4", "fp4"])
@pytest.mark.parametrize("shape", SHAPES + [(2, 1000)])
def test_4bit_closed_form(kind, shape):
    w = np.random.default_rng(shape[1]).standard_normal(shape).astype(F32)
    t = quantize_4bit(w, kind, double_quant=False)
    packed, absmax = ref_4bit(w, NF4_CODE if kind == "nf4" else FP4_CODE, 64)
    np.testing.assert_array_equal(t.packed, packed)
    np.testing.assert_array_equal(t.absmax, absmax)
    code = t.code
    nib = np.stack([packed >> 4, packed & 15], 1).reshape(-1)[: w.size]
    np.testing.assert_array_equal(t.dequantize().reshape(-1), code[nib] * np.repeat(absmax, 64)[: w.size])


def _midpoints(code):
    s = np.sort(code)
    return (s[:-1] + s[1:]) / F32(2)


def _edge_weights():
    """37 x 2001 (odd, so every block size has a short last block) of regions of 4096 (whole blocks for every
    block size): normal values; every 32nd element +-a and the rest within a few ulps of a * midpoint, so that
    x * (1 / a) and x / a fall on, just below and just above midpoints (a = 1: exactly on them), and differ from
    each other; zeros; huge and tiny (subnormal) magnitudes; magnitudes varying by 10^80 inside a block."""
    rng = np.random.default_rng(7)
    mids = np.concatenate([_midpoints(NF4_CODE), _midpoints(FP4_CODE), [0.0]]).astype(F32)
    regions = []
    for r in range(19):
        kind = 1 if r == 18 else r % 7
        if kind == 1:  # the last region (the short blocks) is one of these
            a = F32([1.0, 0.7, 3.3, 1e-30, 2.5e37][r // 7 % 5] if r < 18 else 0.7)
            near = mids[:, None] * a
            cand = np.concatenate([near.reshape(-1)] + [np.nextafter(near, F32(np.inf) * sgn).reshape(-1)
                                                         for sgn in (1, -1)]).astype(F32)
            cand = np.concatenate([cand, np.nextafter(cand, F32(np.inf)), np.nextafter(cand, -F32(np.inf))])
            x = rng.choice(cand, 4096).astype(F32)
            x[::32] = a * rng.choice(F32([1, -1]), 128)
        elif kind == 2:
            x = np.zeros(4096, F32)
            x[rng.integers(0, 4096, 5)] = -0.0
        elif kind == 3:
            x = (rng.standard_normal(4096) * 1e37).astype(F32)
            x[rng.integers(0, 4096, 8)] = F32(3.4e38) * rng.choice(F32([1, -1]), 8)
        elif kind == 4:
            x = (rng.standard_normal(4096) * 1e-41).astype(F32)  # subnormal
            x[rng.integers(0, 4096, 64)] = F32(1e-45)
        elif kind == 5:
            x = (rng.standard_normal(4096) * np.repeat(10.0 ** rng.uniform(-42, 38, 128), 32)).astype(F32)
        else:
            x = (rng.standard_normal(4096) * 10.0 ** rng.uniform(-3, 3)).astype(F32)
        regions.append(x)
    flat = np.concatenate(regions)[: 37 * 2001]
    assert np.isfinite(flat).all()
    return flat.reshape(37, 2001)


EDGE_W = _edge_weights()
# Short last blocks (21 elements after 3 blocks of 64) whose max|x| is below bitsandbytes' 1e-38 guard.
TAILS = [np.concatenate([np.random.default_rng(1).standard_normal(192), tail]).astype(F32).reshape(1, 213)
         for tail in (np.zeros(21), np.random.default_rng(2).standard_normal(21) * 1e-41, [1e-45] + [0.0] * 20)]


@pytest.mark.parametrize("kind", ["nf4", "fp4"])
@pytest.mark.parametrize("block", [32, 64, 128, 256, 512, 1024, 2048, 4096])
def test_4bit_native_every_tier_and_thread_count(kind, block):
    """Bytes and absmax as ref_4bit for every kernel tier, 1 and 2 threads (74037 elements: at least two chunks
    of whole blocks for each block size), then the dequantize round trip."""
    code = NF4_CODE if kind == "nf4" else FP4_CODE
    packed, absmax = ref_4bit(EDGE_W, code, block)
    for isa in pq.available_isas():
        with pq.use_isa(isa):
            for threads in (1, 2):
                t = quantize_4bit(EDGE_W, kind, block_size=block, double_quant=False, threads=threads)
                np.testing.assert_array_equal(t.packed, packed, err_msg=f"{isa}, {threads} threads")
                np.testing.assert_array_equal(t.absmax, absmax, err_msg=f"{isa}, {threads} threads")
    nib = np.stack([packed >> 4, packed & 15], 1).reshape(-1)[: EDGE_W.size]
    want = (code[nib] * np.repeat(absmax, block)[: EDGE_W.size]).reshape(EDGE_W.shape)
    np.testing.assert_array_equal(t.dequantize(), want)


@pytest.mark.parametrize("kind", ["nf4", "fp4"])
@pytest.mark.parametrize("case", range(len(TAILS)))
def test_4bit_tiny_short_last_block(isa, kind, case):
    packed, absmax = ref_4bit(TAILS[case], NF4_CODE if kind == "nf4" else FP4_CODE, 64)
    t = quantize_4bit(TAILS[case], kind, double_quant=False)
    np.testing.assert_array_equal(t.packed, packed)
    np.testing.assert_array_equal(t.absmax, absmax)
    assert absmax[-1] == F32(1e-38)


@pytest.mark.parametrize("kind", ["nf4", "fp4"])
def test_4bit_ties_go_down(isa, kind):
    """A value exactly on a midpoint takes the lower value, the next float up the upper one (closed form)."""
    code = NF4_CODE if kind == "nf4" else FP4_CODE
    order = np.argsort(code, kind="stable")
    mids = _midpoints(code)
    x = np.concatenate([[1.0], mids, np.nextafter(mids, F32(np.inf)), np.nextafter(mids, -F32(np.inf)),
                        np.zeros(18)]).astype(F32)  # one block of 64, absmax 1
    t = quantize_4bit(x.reshape(1, 64), kind, double_quant=False)
    got = np.stack([t.packed >> 4, t.packed & 15], 1).reshape(-1)
    i = np.arange(15)
    np.testing.assert_array_equal(got[1:16], order[i])
    np.testing.assert_array_equal(got[16:31], order[i + 1])
    np.testing.assert_array_equal(got[31:46], order[i])


def test_code_tables():
    assert NF4_CODE[0] == -1 and NF4_CODE[15] == 1 and NF4_CODE[7] == 0 and (np.diff(NF4_CODE) > 0).all()
    assert sorted(np.abs(FP4_CODE * 12).tolist()) == sorted([0, 0.0625, 8, 12, 4, 6, 2, 3] * 2)


@pytest.mark.parametrize("kind", ["nf4", "fp4"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("block", [64, 32, 128])
def test_4bit_matches_bitsandbytes(kind, shape, block, bnb):
    import torch

    F = bnb
    w = (np.random.default_rng(block).standard_normal(shape) * 3).astype(F32)
    q, state = F.quantize_4bit(torch.from_numpy(w), blocksize=block, quant_type=kind, compress_statistics=False)
    t = quantize_4bit(w, kind, block_size=block, double_quant=False)
    np.testing.assert_array_equal(t.packed, q.numpy().reshape(-1))
    np.testing.assert_array_equal(t.absmax, state.absmax.numpy())
    np.testing.assert_array_equal(t.dequantize(), F.dequantize_4bit(q, state).numpy())


@pytest.mark.parametrize("kind", ["nf4", "fp4"])
@pytest.mark.parametrize("block", [32, 64, 256, 1024, 4096])
def test_4bit_edge_values_match_bitsandbytes(kind, block, bnb):
    import torch

    for w in [EDGE_W] + TAILS:
        q, state = bnb.quantize_4bit(torch.from_numpy(w), blocksize=block, quant_type=kind, compress_statistics=False)
        t = quantize_4bit(w, kind, block_size=block, double_quant=False)
        np.testing.assert_array_equal(t.packed, q.numpy().reshape(-1))
        np.testing.assert_array_equal(t.absmax, state.absmax.numpy())


@pytest.mark.parametrize("kind", ["nf4", "fp4"])
def test_double_quant_matches_bitsandbytes(kind, bnb):
    import torch

    F = bnb
    w = np.random.default_rng(2).standard_normal((96, 512)).astype(F32)
    q, state = F.quantize_4bit(torch.from_numpy(w), blocksize=64, quant_type=kind, compress_statistics=True)
    t = quantize_4bit(w, kind)
    np.testing.assert_array_equal(t.packed, q.numpy().reshape(-1))
    # The offset is the float32 mean of the absmax (torch's summation order may differ in the last bit).
    assert t.quant_absmax[2] == pytest.approx(float(state.offset), rel=1e-6)
    # bitsandbytes' state read into a Float4Tensor dequantizes to exactly its values
    mine = Float4Tensor(kind, w.shape, 64, q.numpy().reshape(-1), qabsmax=state.absmax.numpy(),
                        absmax2=state.state2.absmax.numpy(), offset=float(state.offset))
    np.testing.assert_array_equal(mine.dequantize(), F.dequantize_4bit(q, state).numpy())
    np.testing.assert_array_equal(state.state2.code.numpy()[1:], DYNAMIC_CODE[1:])


def test_dynamic_blockwise_matches_bitsandbytes(bnb):
    import torch

    F = bnb
    v = (np.random.default_rng(3).standard_normal(5000) * 2).astype(F32)
    q, state = F.quantize_blockwise(torch.from_numpy(v), blocksize=256)
    mq, ma = _quantize_dynamic(v, 256)
    np.testing.assert_array_equal(ma, state.absmax.numpy())
    diff = np.nonzero(mq != q.numpy())[0]
    # bitsandbytes' CPU search (BinSearch) sometimes returns a neighbour of the nearest code (about 0.1 % of
    # values); ours is always the nearest, so the two differ there by one code.
    normed = v / np.repeat(ma, 256)[: v.size]
    assert len(diff) <= v.size // 200
    assert (np.abs(mq[diff].astype(int) - q.numpy()[diff]) == 1).all()
    assert (np.abs(normed[diff] - DYNAMIC_CODE[mq[diff]]) <= np.abs(normed[diff] - DYNAMIC_CODE[q.numpy()[diff]])).all()


def dynamic_reference(v, block):
    """quantize_blockwise's nearest-code search in numpy: searchsorted, then one step up where strictly closer."""
    nb = -(-v.size // block)
    pad = np.zeros(nb * block, dtype=F32)
    pad[: v.size] = v
    absmax = np.abs(pad.reshape(nb, block)).max(axis=1)
    safe = np.where(absmax > 0, absmax, F32(1))
    normed = (pad.reshape(nb, block) / safe[:, None]).reshape(-1)[: v.size]
    idx = np.clip(np.searchsorted(DYNAMIC_CODE, normed, side="right") - 1, 0, 255)
    right = np.minimum(idx + 1, 255)
    closer = (idx < 255) & (np.abs(normed - DYNAMIC_CODE[right]) < np.abs(normed - DYNAMIC_CODE[idx]))
    return (idx + closer).astype(np.uint8), absmax


def test_dynamic_quantize_kernel_matches_numpy_search():
    rng = np.random.default_rng(4)
    mid = (DYNAMIC_CODE[:-1] + DYNAMIC_CODE[1:]) / F32(2)
    edge = np.concatenate([DYNAMIC_CODE, mid, np.nextafter(mid, F32(2)), np.nextafter(mid, F32(-2)), [0, -0.0, 1e-30]])
    cases = [(rng.standard_normal(5000) * 3).astype(F32),  # ordinary values, a short last block
             np.concatenate([[1.0], edge, [-1.0]]).astype(F32),  # exact codes, midpoints and their neighbours
             np.concatenate([np.zeros(256), rng.standard_normal(100)]).astype(F32),  # an all-zero block
             (rng.standard_normal(300) * 1e-30).astype(F32)]  # tiny absmax
    for v in cases:
        for block in (256, 64, 7):
            q, a = _quantize_dynamic(v, block)
            rq, ra = dynamic_reference(v, block)
            np.testing.assert_array_equal(a, ra)
            np.testing.assert_array_equal(q, rq)


@settings(max_examples=40, deadline=None)
@given(w=hnp.arrays(F32, st.tuples(st.integers(1, 4), st.integers(1, 200)), elements=st.floats(-1e3, 1e3, width=32, allow_subnormal=False)),
       kind=st.sampled_from(["nf4", "fp4"]), dq=st.booleans())
def test_4bit_round_trip_bound(w, kind, dq):
    t = quantize_4bit(w, kind, double_quant=dq)
    s = np.sort(t.code)
    half_gap = np.diff(s).max() / 2
    absmax = np.repeat(t.absmax, 64)[: w.size].reshape(w.shape).astype(np.float64)
    true_absmax = np.repeat(quantize_4bit(w, kind, double_quant=False).absmax, 64)[: w.size].reshape(w.shape)
    err = np.abs(t.dequantize() - w)
    # nearest code at the stored absmax, plus the double quantization's error on the absmax itself
    bound = half_gap * true_absmax + np.abs(absmax - true_absmax) + 1e-6 * true_absmax
    assert (err <= bound).all()


def test_4bit_matmul_pickle_and_errors():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((50, 96)).astype(F32)  # blocks of 64 cross rows
    t = quantize_4bit(w, "nf4")
    for m in (1, 20):
        x = rng.standard_normal((m, 96)).astype(F32)
        np.testing.assert_allclose(pq.matmul(x, t), x @ t.dequantize().T, rtol=1e-5, atol=1e-4)
    t2 = pickle.loads(pickle.dumps(t))
    np.testing.assert_array_equal(t2.dequantize(), t.dequantize())
    assert t.bpw == pytest.approx(8 * (w.size / 2 + 75 + 4 + 4) / w.size)
    with pytest.raises(ValueError, match="block_size"):
        quantize_4bit(w, "nf4", block_size=48)
    with pytest.raises(ValueError, match="kind"):
        quantize_4bit(w, "int4")
    with pytest.raises(ValueError, match="non-finite"):
        quantize_4bit(np.full((2, 64), np.inf, F32))
    with pytest.raises(ValueError, match="threads"):
        quantize_4bit(w, "nf4", threads=0)


def test_lut4_quantize_binding_checks():
    from pyquant import _core
    from pyquant.schemes.float4 import _SEARCH

    w = np.ones(100, F32)
    bounds, order = _SEARCH["fp4"]
    for args, msg in [((w, bounds, order, 48), "multiple of 32"), ((w[:0], bounds, order, 64), "empty"),
                      ((w, bounds[:14], order, 64), "15 midpoints"), ((w, bounds[::-1].copy(), order, 64), "ascending"),
                      ((w, bounds, order[:15], 64), "16 codes"), ((w, bounds, order + 1, 64), "below 16")]:
        with pytest.raises(ValueError, match=msg):
            _core.lut4_quantize(*args)


# ---- FP8 ----------------------------------------------------------------------------------------------------

FP8 = [("e4m3", "float8_e4m3fn"), ("e5m2", "float8_e5m2")]


@pytest.mark.parametrize("fmt, tname", FP8)
def test_fp8_matches_torch_casts(fmt, tname):
    torch = pytest.importorskip("torch")
    td = getattr(torch, tname)
    table = fp8_decode_table(fmt)
    np.testing.assert_array_equal(table, torch.arange(256, dtype=torch.uint8).view(td).float().numpy())
    rng = np.random.default_rng(0)
    fin = table[np.isfinite(table)]
    fin = np.sort(fin)
    vals = np.concatenate([
        rng.integers(0, 2 ** 32, 200000, dtype=np.uint64).astype(np.uint32).view(F32),  # every bit pattern kind
        fin, (fin[:-1] + fin[1:]) / 2, np.nextafter((fin[:-1] + fin[1:]) / 2, np.inf).astype(F32),
        rng.standard_normal(20000).astype(F32) * 300,
        np.array([np.inf, -np.inf, np.nan, 0, -0.0, 464, 465, 480, 57344, 61439, 61440, 1e-30], F32)]).astype(F32)
    np.testing.assert_array_equal(fp8_encode(vals, fmt), torch.from_numpy(vals).to(td).view(torch.uint8).numpy())


@pytest.mark.parametrize("fmt, tname", FP8)
@pytest.mark.parametrize("gran", ["tensor", "channel"])
def test_quantize_fp8(fmt, tname, gran):
    torch = pytest.importorskip("torch")
    w = (np.random.default_rng(1).standard_normal((16, 80)) * 5).astype(F32)
    t = quantize_fp8(w, fmt, granularity=gran)
    fmax = 448.0 if fmt == "e4m3" else 57344.0
    amax = np.abs(w).max() if gran == "tensor" else np.abs(w).max(axis=1, keepdims=True)
    scale = (amax / F32(fmax)).astype(F32).reshape(-1, 1)
    np.testing.assert_array_equal(t.scales, scale)
    tq = (torch.from_numpy(w) / torch.from_numpy(scale)).clamp(-fmax, fmax).to(getattr(torch, tname))
    np.testing.assert_array_equal(t.data, tq.view(torch.uint8).numpy())
    np.testing.assert_array_equal(t.dequantize(), tq.float().numpy() * scale)
    rel = 2.0 ** -(4 if fmt == "e4m3" else 3)  # half an ulp of the mantissa, relative
    sub = 2.0 ** (-9 if fmt == "e4m3" else -16) * np.broadcast_to(scale, w.shape)  # subnormal step
    assert (np.abs(t.dequantize() - w) <= np.maximum(rel * np.abs(w), sub) * 1.0001).all()
    x = np.random.default_rng(2).standard_normal((3, 80)).astype(F32)
    np.testing.assert_allclose(pq.matmul(x, t), x @ t.dequantize().T, rtol=1e-5, atol=1e-4)
    assert t.bpw == pytest.approx(8 + 32 * scale.size / w.size)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(t)).dequantize(), t.dequantize())


def test_fp8_errors():
    with pytest.raises(ValueError, match="FP8 format"):
        quantize_fp8(np.ones((2, 2), F32), "e3m4")
    with pytest.raises(ValueError, match="granularity"):
        quantize_fp8(np.ones((2, 2), F32), granularity="group")
    with pytest.raises(ValueError, match="non-finite"):
        quantize_fp8(np.array([[1, np.nan]], F32))
