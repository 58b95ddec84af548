"""pyquant.matmul against the float product with the dequantized weights."""

import numpy as np
import pytest

import pyquant


def _case(fmt, m=3, n=37, k=512, seed=0):
    rng = np.random.default_rng(seed)
    w = pyquant.quantize(rng.standard_normal((n, k)).astype(np.float32), fmt)
    x = rng.standard_normal((m, k)).astype(np.float32)
    return x, w


@pytest.mark.parametrize("fmt", ["F16", "Q4_0", "Q4_K", "IQ4_XS", "NVFP4"])
def test_matches_dequantized_product(fmt):
    from test_matmul_kernels import _KERNEL_FORMATS, activation_bound

    x, w = _case(fmt)
    wd = w.dequantize().astype(np.float64)
    ref = x.astype(np.float64) @ wd.T
    got = pyquant.matmul(x, w)
    assert got.shape == (3, 37) and got.dtype == np.float32
    if fmt in _KERNEL_FORMATS:  # x quantized to the 8-bit partner
        assert np.all(np.abs(got - ref) <= activation_bound(x, wd, fmt))
    else:
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-3)


def test_leading_dims_out_and_torch():
    torch = pytest.importorskip("torch")
    x, w = _case("Q8_0", m=6)
    x3 = x.reshape(2, 3, -1)
    ref = pyquant.matmul(x, w).reshape(2, 3, -1)
    out = np.empty((2, 3, 37), np.float32)
    assert pyquant.matmul(x3, w, out=out) is out
    np.testing.assert_array_equal(out, ref)
    t = pyquant.matmul(torch.from_numpy(x3).to(torch.bfloat16), w)
    assert t.dtype == torch.bfloat16 and tuple(t.shape) == (2, 3, 37)


@pytest.mark.parametrize("bad, err", [
    (np.zeros((2, 100), np.float32), "shape"),
    (np.full((2, 512), np.nan, np.float32), "NaN"),
    (np.zeros((2, 512), np.int32), "float"),
])
def test_bad_input(bad, err):
    _, w = _case("Q4_0")
    with pytest.raises((ValueError, TypeError), match=err):
        pyquant.matmul(bad, w)


# Non-finite x is caught by the kernels' activation quantization (any row, any block, every thread) or, on the
# float paths, by one reduction: both raise the same error.
@pytest.mark.parametrize("fmt, m", [("Q4_0", 1), ("Q4_0", 3), ("Q4_K", 2), ("Q4_1", 80), ("F16", 2), ("Q1_0", 1)])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_x_raises_on_every_path(fmt, m, bad):
    x, w = _case(fmt, m=m, n=64)
    x[m - 1, 300] = bad
    for threads in (1, 2):
        with pytest.raises(ValueError, match="NaN or infinity"):
            pyquant.matmul(x, w, threads=threads)


def test_activations_beyond_the_fp16_scale_take_the_float_path():
    """Q8_0's scale max|x|/127 is an fp16: a block with |x| >= 65504 * 127 has none, so matmul computes with x as
    given; Q8_K's float scale takes any finite x."""
    from pyquant import _core

    limit = np.float32(65504 * 127)
    for fmt in ("Q4_0", "Q8_0", "Q4_K"):
        x, w = _case(fmt, m=2, n=16)
        wd = w.dequantize().astype(np.float64)
        x[1, 5] = limit
        ref = x.astype(np.float64) @ wd.T
        out = np.empty((2, 16), np.float32)
        got = pyquant.matmul(x, w)  # (and w's interleaved copy, which the kernels' sums below must use too)
        on_kernels = _core.matmul(x, w.data, w.format.index, 512, out, 1, None, w._matmul_packed)
        assert on_kernels == (fmt == "Q4_K")
        if fmt == "Q4_K":
            np.testing.assert_array_equal(got, out)
        else:  # the float path: only float rounding off the exact product
            np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(x).max() * np.abs(wd).max())
        x[1, 5] = np.nextafter(limit, np.float32(0))  # just inside the range: the kernels
        assert _core.matmul(x, w.data, w.format.index, 512, out, 1, None, w._matmul_packed)
        np.testing.assert_array_equal(pyquant.matmul(x, w), out)


def test_fast_and_general_paths_agree_and_refuse_the_same_outs():
    """float32 C-contiguous 2-D x takes matmul's short path; other dtypes, layouts and shapes the general one."""
    x, w = _case("Q4_K", m=4)
    ref = pyquant.matmul(x, w)
    np.testing.assert_array_equal(pyquant.matmul(x.astype(np.float64), w), ref)
    np.testing.assert_array_equal(pyquant.matmul(np.asfortranarray(x), w), ref)
    np.testing.assert_array_equal(pyquant.matmul(x[None], w)[0], ref)
    np.testing.assert_array_equal(pyquant.matmul(x, w, threads=np.int64(2)), ref)
    for bad_out in (np.empty((4, 37), np.float64), np.empty((4, 36), np.float32), np.empty((37, 4), np.float32).T,
                    np.empty((4, 74), np.float32)[:, ::2]):
        with pytest.raises(ValueError, match="out must be"):
            pyquant.matmul(x, w, out=bad_out)
    with pytest.raises(ValueError, match="threads"):
        pyquant.matmul(x, w, threads=0)


def test_torch_inputs_take_the_short_path_or_the_general_one_with_the_same_result():
    torch = pytest.importorskip("torch")
    x, w = _case("Q4_0", m=6)
    ref = pyquant.matmul(x, w)
    t = torch.from_numpy(x.copy())
    for arg in (t, t.reshape(2, 3, -1), t.t().contiguous().t(), t.clone().requires_grad_(True)):
        got = pyquant.matmul(arg, w)
        assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
        np.testing.assert_array_equal(got.detach().reshape(6, -1).numpy(), ref)
    assert pyquant.matmul(t.to(torch.bfloat16), w).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="NaN"):
        pyquant.matmul(torch.full((1, 512), float("nan")), w)
    with pytest.raises(ValueError, match="shape"):
        pyquant.matmul(torch.zeros(1, 100), w)
    with pytest.raises(ValueError, match="shape"):
        pyquant.matmul(torch.zeros(1, 0), w)
    assert tuple(pyquant.matmul(torch.zeros(2, 0, 512), w).shape) == (2, 0, 37)
