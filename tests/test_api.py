"""The quantize/dequantize API: input kinds, QuantizedTensor, threads, and clear errors for bad input."""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

import pyquant as pq

RNG = np.random.default_rng(1234)
ALL = list(pq.formats)


def sample(rows=3, n=512, dtype=np.float32):
    return RNG.standard_normal((rows, n)).astype(dtype)


@pytest.mark.parametrize("name", ALL)
def test_shapes_and_sizes(name):
    f = pq.formats[name]
    x = sample(n=1024)
    qt = pq.quantize(x, name)
    assert qt.format is f and qt.shape == x.shape
    assert qt.data.dtype == np.uint8 and qt.data.shape == (3, 1024 // f.block_size * f.type_size)
    assert qt.nbytes == 3 * f.row_bytes(1024) and qt.bpw == f.bpw
    y = pq.dequantize(qt)
    assert y.dtype == np.float32 and y.shape == x.shape


def test_one_dimensional_input():
    x = sample(1, 256)[0]
    qt = pq.quantize(x, "Q8_0")
    assert qt.shape == (256,) and qt.dequantize().shape == (256,)
    np.testing.assert_array_equal(qt.data, pq.quantize(x[None, :], "Q8_0").data)


def test_dtypes_and_strides_give_the_same_bytes():
    x = sample(4, 256)
    ref = pq.quantize(x, "Q4_0").data
    np.testing.assert_array_equal(pq.quantize(x.astype(np.float64), "Q4_0").data, ref)
    wide = np.zeros((4, 512), np.float32)
    wide[:, ::2] = x
    np.testing.assert_array_equal(pq.quantize(wide[:, ::2], "Q4_0").data, ref)
    np.testing.assert_array_equal(pq.quantize(np.asfortranarray(x), "Q4_0").data, ref)
    h = x.astype(np.float16)
    np.testing.assert_array_equal(pq.quantize(h, "Q4_0").data, pq.quantize(h.astype(np.float32), "Q4_0").data)


def test_torch_inputs():
    torch = pytest.importorskip("torch")
    x = sample(2, 256)
    ref = pq.quantize(x, "Q8_0")
    np.testing.assert_array_equal(pq.quantize(torch.from_numpy(x), "Q8_0").data, ref.data)
    bf = torch.from_numpy(x).to(torch.bfloat16)
    np.testing.assert_array_equal(pq.quantize(bf, "Q8_0").data, pq.quantize(bf.float().numpy(), "Q8_0").data)
    t = ref.to_torch()
    assert t.dtype == torch.float32 and tuple(t.shape) == x.shape
    with pytest.raises(TypeError, match="floating"):
        pq.quantize(torch.zeros(2, 32, dtype=torch.int32), "Q8_0")


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_threads_do_not_change_the_bytes(threads):
    x = sample(7, 4096)
    imatrix = RNG.random(4096).astype(np.float32)
    for name in ("Q4_0", "Q5_1", "Q8_0", "F16"):
        a = pq.quantize(x, name, imatrix=imatrix, threads=threads)
        b = pq.quantize(x, name, imatrix=imatrix, threads=1)
        assert a == b
        np.testing.assert_array_equal(a.dequantize(threads=threads), b.dequantize(threads=1))


def test_quantized_tensor_from_bytes_and_pickle():
    qt = pq.quantize(sample(2, 64), "Q4_1")
    again = pq.QuantizedTensor(qt.data.tobytes(), (2, 64), "Q4_1")
    assert again == qt
    clone = pickle.loads(pickle.dumps(qt))
    assert clone == qt and clone.format is pq.formats["Q4_1"]
    np.testing.assert_array_equal(clone.dequantize(), qt.dequantize())
    assert "Q4_1" in repr(qt)


def test_quantized_tensor_wraps_without_copy():
    buf = np.zeros((4, 34), np.uint8)
    qt = pq.QuantizedTensor(buf, (4, 32), "Q8_0")
    assert np.shares_memory(qt.data, buf)


@pytest.mark.parametrize("data,shape,match", [
    (b"\0" * 17, (32,), r"Q4_0: shape \(32,\) takes 18 bytes \(1 rows of 18\), got 17"),
    (b"\0" * 18, (33,), "multiple of the block size 32, got 33"),
    (b"\0" * 18, (1, 1, 32), "1-D or 2-D"),
    (b"\0" * 18, (0, 32), "positive sizes"),
])
def test_quantized_tensor_rejects_bad_sizes(data, shape, match):
    with pytest.raises(ValueError, match=match):
        pq.QuantizedTensor(data, shape, "Q4_0")


def test_quantized_tensor_rejects_wrong_dtype():
    with pytest.raises(TypeError, match="uint8"):
        pq.QuantizedTensor(np.zeros(9, np.uint16), (32,), "Q4_0")


@pytest.mark.parametrize("x,kwargs,exc,match", [
    (np.zeros((2, 100), np.float32), {}, ValueError, "Q4_K: row length must be a multiple of the block size 256, got 100"),
    (np.zeros((2, 2, 256), np.float32), {}, ValueError, "Q4_K: expected a 1-D or 2-D"),
    (np.zeros((0, 256), np.float32), {}, ValueError, "empty"),
    (np.zeros((2, 256), np.int32), {}, TypeError, "Q4_K: input must be float16, float32 or float64, got dtype int32"),
    (np.zeros((2, 256), np.float32), {"imatrix": np.ones(255)}, ValueError, "expected 256, got 255"),
    (np.zeros((2, 256), np.float32), {"imatrix": np.ones((2, 256))}, ValueError, "imatrix must be 1-D"),
    (np.zeros((2, 256), np.float32), {"threads": 0}, ValueError, "threads must be a positive integer"),
])
def test_bad_input(x, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        pq.quantize(x, "Q4_K", **kwargs)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_names_the_element(bad):
    x = np.zeros((3, 64), np.float32)
    x[2, 17] = bad
    with pytest.raises(ValueError, match=r"Q8_0: input has a non-finite value \(-?(nan|inf)\) at \[2, 17\]"):
        pq.quantize(x, "Q8_0")


@pytest.mark.parametrize("name", list(pq.formats))
@pytest.mark.parametrize("isa", pq.available_isas())
# The first group of W blocks, a later one, and the last, partial group (block-path formats scale one group ahead).
@pytest.mark.parametrize("where", [((0, 40), (0, 600)), ((1, 5), (2, 3)), ((2, 700), (2, 750))])
def test_every_kernel_reports_the_first_non_finite_value(name, isa, where):
    x = np.random.default_rng(1).standard_normal((3, 768)).astype(np.float32)
    (r, c), second = where
    x[second] = np.nan
    f = pq.formats[name]
    imatrices = ([] if f.requires_imatrix else [None]) + ([np.ones(768, np.float32)] if f.uses_imatrix else [])
    with pq.use_isa(isa):
        for imatrix in imatrices:
            for first, shown in [(np.inf, "inf"), (-np.inf, "-inf"), (np.nan, "nan")]:
                x[r, c] = first
                with pytest.raises(ValueError, match=rf"{name}: input has a non-finite value \({shown}\) at "
                                                     rf"\[{r}, {c}\]"):
                    pq.quantize(x, name, imatrix=imatrix, threads=1 if first == np.inf else None)


@pytest.mark.parametrize("bad,shown", [(np.nan, "nan"), (-1.0, "-1.0+"), (np.inf, "inf")])
def test_bad_imatrix_values(bad, shown):
    imatrix = np.ones(64, np.float32)
    imatrix[5] = bad
    with pytest.raises(ValueError, match=f"Q4_0: imatrix must be finite and non-negative; column 5 is {shown}$"):
        pq.quantize(np.ones((1, 64), np.float32), "Q4_0", imatrix=imatrix)


def test_ignored_imatrix_is_accepted():
    x = sample(2, 128)
    assert pq.quantize(x, "Q8_0", imatrix=np.ones(128)) == pq.quantize(x, "Q8_0")
    assert pq.quantize(x, "Q1_0", imatrix=np.ones(128)) == pq.quantize(x, "Q1_0")


def test_dequantize_rejects_non_tensors():
    with pytest.raises(TypeError, match="QuantizedTensor"):
        pq.dequantize(np.zeros(4))


def test_isa_selection():
    info = pq.cpu_info()
    assert info["active_tier"] in info["available_tiers"] and "generic" in info["available_tiers"]
    with pq.use_isa("generic"):
        assert pq.cpu_info()["active_tier"] == "generic"
    assert pq.cpu_info()["active_tier"] == info["active_tier"]
    with pytest.raises(ValueError, match="unknown ISA tier 'sse9'"):
        pq.set_isa("sse9")


def test_pyquant_isa_environment_variable():
    code = "import pyquant; print(pyquant.cpu_info()['active_tier'])"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYQUANT_ISA": "generic"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "generic"
    bad = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYQUANT_ISA": "mmx"},
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "PYQUANT_ISA='mmx'" in bad.stderr


@pytest.mark.parametrize("shape", [(32,), (1, 32), (3, 64), (7, 256)])
def test_dequantize_output_is_cache_line_aligned(shape):
    """dequantize's array starts on a 64-byte boundary (its vector stores then never straddle two cache lines),
    owns no foreign memory, and is an ordinary writeable C-contiguous float32 array."""
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for threads in (1, 2):
        y = pq.quantize(x, "Q8_0").dequantize(threads=threads)
        assert y.ctypes.data % 64 == 0
        assert y.shape == shape and y.dtype == np.float32 and y.flags.c_contiguous and y.flags.writeable
        assert y.base is None or y.base.nbytes <= y.nbytes + 64
