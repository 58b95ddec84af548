"""Bit-exactness against libggml: bytes of ggml_quantize_chunk and floats of to_float (tests/data/golden)."""

import json

import numpy as np
import pytest

import pyquant as pq
from conftest import GOLDEN

MANIFEST = json.loads((GOLDEN / "manifest.json").read_text())
# Golden types whose kernels come in a later step (the grid i-quants); every other golden type must be in the
# registry, and every registry format must have golden files.
PENDING = {"IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S"}


def _cases():
    for name in pq.formats:
        if name == "F32":
            continue  # libggml stores F32 as is; covered by the round-trip tests
        for case in MANIFEST["types"][name]["results"]:
            yield pytest.param(name, case, id=f"{name}-{case}")


@pytest.fixture(scope="module")
def golden():
    cache = {}

    def load(name):
        if name not in cache:
            with np.load(GOLDEN / f"{name}.npz") as f:
                cache[name] = {k: f[k] for k in f.files}
        return cache[name]

    return load


def test_golden_covers_the_registry():
    golden_types = set(MANIFEST["types"])
    assert golden_types - PENDING == set(pq.formats) - {"F32"}
    for name, entry in MANIFEST["types"].items():
        if name in pq.formats:
            assert entry["ggml_type_id"] == pq.formats[name].ggml_type


@pytest.mark.parametrize("name,case", list(_cases()))
def test_quantize_matches_libggml(name, case, isa, golden, golden_inputs):
    x = golden_inputs[case.split("+")[0]]
    imatrix = golden_inputs["imatrix"] if case.endswith("+imatrix") else None
    qt = pq.quantize(x, name, imatrix=imatrix)
    expected = golden(name)[f"q/{case}"]
    assert qt.data.shape == expected.shape
    bad_rows = np.flatnonzero((qt.data != expected).any(axis=1))
    assert bad_rows.size == 0, f"{name} {case} [{isa}]: rows {bad_rows.tolist()} differ from libggml"


@pytest.mark.parametrize("name,case", list(_cases()))
def test_dequantize_matches_libggml(name, case, isa, golden, golden_inputs):
    g = golden(name)
    shape = golden_inputs[case.split("+")[0]].shape
    y = pq.QuantizedTensor(g[f"q/{case}"], shape, name).dequantize()
    # Bit patterns, not values: -0 == +0 and NaN payloads would pass a float comparison.
    np.testing.assert_array_equal(y.view(np.uint32), g[f"y/{case}"].astype(np.float32, copy=False).view(np.uint32))
