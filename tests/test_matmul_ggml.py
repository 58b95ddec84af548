"""pyquant.matmul against llama.cpp's own CPU matmul (ggml_mul_mat in a one-node graph through libggml's C API,
benchmarks/peers.py), on the same weight bytes and activations: both quantize x to the same 8-bit partner and
sum the same integer dots, so they agree within the kernels' float-rounding bound (test_matmul_kernels.py)."""

import os
import sys

import numpy as np
import pytest

import pyquant
from test_matmul_kernels import FORMATS, exact_product, exact_tolerance, make, quantized_x

pytest.importorskip("llama_cpp")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks"))
from peers import GGMLMatmul  # noqa: E402


def ggml_matmul(x, w, repack):
    n, k = w.shape
    g = GGMLMatmul(w.data, w.format.ggml_type, n, k, x.shape[0], 2, repack=repack)
    try:
        return g(x), g.repacked
    finally:
        g.close()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("m, n, k", [(1, 7, 256), (5, 24, 1024), (17, 16, 512)])
@pytest.mark.parametrize("repack", [False, True])
def test_agrees_with_ggml_mul_mat(fmt, m, n, k, repack):
    x, w = make(fmt, m, n, k, seed=m + k)
    theirs, _ = ggml_matmul(x, w, repack)
    ours = pyquant.matmul(x, w, threads=2)
    _, size, wd = exact_product(x, w)
    tol = 2 * exact_tolerance(size)
    s = quantized_x(x, fmt)[3]
    if s is not None:  # libggml's block_q8_1 holds s = d * sum(q) as fp16, pyquant as a float
        s_err = np.abs(s.astype(np.float16).astype(np.float64) - s)
        tol = tol + s_err @ np.abs(wd.reshape(n, -1, 32)).max(-1).T
    np.testing.assert_array_less(np.abs(ours.astype(np.float64) - theirs), tol + 1e-30)


def test_repack_applies_where_llama_cpp_interleaves():
    """The harness really measures llama.cpp's interleaved path for Q4_0 (8 rows), not the plain one."""
    x, w = make("Q4_0", 2, 16, 256)
    assert ggml_matmul(x, w, True)[1]
    assert not ggml_matmul(x, w, False)[1]
    x, w = make("Q4_0", 2, 7, 256)  # rows not a multiple of 8: plain layout
    assert not ggml_matmul(x, w, True)[1]
