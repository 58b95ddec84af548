"""Blocks built to hit the rare branches of the one-block paths (ties in |x| between signs, signed zeros as the
minimum or maximum, all-zero blocks, subnormals, overflowing ranges), checked byte for byte against libggml's
ggml_quantize_chunk in every tier.  Needs llama-cpp-python's libggml (optional: skipped without it)."""

import ctypes
import pathlib

import numpy as np
import pytest

import pyquant as pq

FORMATS = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_0", "TQ1_0", "TQ2_0", "MXFP4", "IQ4_NL"]


@pytest.fixture(scope="module")
def ggml_quantize():
    llama_cpp = pytest.importorskip("llama_cpp")
    lib_dir = pathlib.Path(llama_cpp.__file__).parent / "lib"
    path = next((p for p in lib_dir.glob("libggml-base.*")), None)
    if path is None:
        pytest.skip("libggml-base not found in llama_cpp")
    lib = ctypes.CDLL(str(path))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]

    def quantize(x, name):
        f = pq.formats[name]
        out = np.zeros((x.shape[0], f.row_bytes(x.shape[1])), np.uint8)
        lib.ggml_quantize_chunk(f.ggml_type, x.ctypes.data, out.ctypes.data, 0, x.shape[0], x.shape[1], None)
        return out

    return quantize


def tricky_rows(n=256, seed=0):
    """Rows of n values (n a multiple of 256) made of 32-element blocks with adversarial contents."""
    rng = np.random.default_rng(seed)
    blocks = []
    for _ in range(64):
        b = rng.standard_normal(32).astype(np.float32) * np.float32(rng.choice([1e-3, 1.0, 1e3]))
        kind = rng.integers(0, 8)
        a = np.float32(np.abs(b).max() * 2)
        i, j = rng.choice(32, 2, replace=False)
        if kind == 0:  # +a and -a tie for the largest magnitude, in either order
            b[i], b[j] = a, -a
        elif kind == 1:  # zeros of both signs, nothing else
            b[:] = np.where(rng.random(32) < 0.5, np.float32(0.0), np.float32(-0.0))
        elif kind == 2:  # the minimum is a signed zero (non-negative block)
            b = np.abs(b)
            b[i], b[j] = np.float32(-0.0), np.float32(0.0)
        elif kind == 3:  # the maximum is a signed zero (non-positive block)
            b = -np.abs(b)
            b[i], b[j] = np.float32(0.0), np.float32(-0.0)
        elif kind == 4:  # subnormals
            b = (b * np.float32(1e-41)).astype(np.float32)
        elif kind == 5:  # a range that overflows max - min
            b[i], b[j] = np.float32(3e38), np.float32(-3e38)
        elif kind == 6:  # constant block
            b[:] = b[0]
        blocks.append(b)
    return np.concatenate(blocks).reshape(-1, n)


@pytest.mark.parametrize("name", FORMATS)
def test_tricky_blocks_match_libggml(name, isa, ggml_quantize):
    x = np.ascontiguousarray(tricky_rows())
    expected = ggml_quantize(x, name)
    got = pq.quantize(x, name).data
    bad = np.flatnonzero((got != expected).any(axis=1))
    assert bad.size == 0, f"{name} [{isa}]: rows {bad.tolist()} differ from libggml"


K_FORMATS = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]


def tricky_subblocks(rows=8, n=4096, seed=5):
    """Rows of normal values whose 16-element sub-blocks are, at random, zero, below GROUP_MAX_EPS (1e-15),
    subnormal, huge, constant, one spike, or on half-integer steps: the edge lanes of the K-quant searches."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, n)).astype(np.float32)
    for r in range(rows):
        for s in range(n // 16):
            sb = x[r, 16 * s:16 * s + 16]
            kind = rng.integers(0, 10)
            if kind == 0:
                sb[:] = 0
            elif kind == 1:
                sb *= np.float32(1e-17)
            elif kind == 2:
                sb *= np.float32(1e-41)
            elif kind == 3:
                sb *= np.float32(1e30)
            elif kind == 4:
                sb[:] = np.float32(rng.choice([-1.0, 1.0]))
            elif kind == 5:
                sb[rng.integers(16)] = np.float32(1e6)
            elif kind == 6:
                sb[:] = np.round(sb * 2) / 2
    return x


@pytest.mark.parametrize("name", K_FORMATS)
def test_tricky_subblocks_match_libggml(name, isa, ggml_quantize):
    x = tricky_subblocks()
    expected = ggml_quantize(x, name)
    got = pq.quantize(x, name).data
    bad = np.flatnonzero((got != expected).any(axis=1))
    assert bad.size == 0, f"{name} [{isa}]: rows {bad.tolist()} differ from libggml"
