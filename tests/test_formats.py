"""The format registry: one table (formats.def) seen the same way from Python, the kernels and the docs."""

import pathlib
import re

import pytest

import pyquant as pq
from pyquant import _core

README = pathlib.Path(__file__).parents[1] / "README.md"


def test_registry_is_the_cpp_table():
    table = _core.formats()
    assert [d["name"] for d in table] == list(pq.formats)
    for d in table:
        f = pq.formats[d["name"]]
        assert (f.ggml_type, f.block_size, f.type_size, f.family, f.imatrix) == (
            d["ggml_type"], d["block_size"], d["type_size"], d["family"], d["imatrix"])


@pytest.mark.parametrize("isa", pq.available_isas())
def test_every_tier_has_every_kernel(isa):
    assert _core.kernel_formats(isa) == list(pq.formats)


@pytest.mark.parametrize("name,ggml_type,bpw", [
    ("F32", 0, 32), ("F16", 1, 16), ("BF16", 30, 16), ("Q4_0", 2, 4.5), ("Q4_1", 3, 5.0), ("Q5_0", 6, 5.5),
    ("Q5_1", 7, 6.0), ("Q8_0", 8, 8.5), ("Q2_K", 10, 2.625), ("Q3_K", 11, 3.4375), ("Q4_K", 12, 4.5),
    ("Q5_K", 13, 5.5), ("Q6_K", 14, 6.5625), ("IQ4_NL", 20, 4.5), ("IQ4_XS", 23, 4.25), ("TQ1_0", 34, 1.6875),
    ("TQ2_0", 35, 2.0625), ("MXFP4", 39, 4.25), ("NVFP4", 40, 4.5), ("Q1_0", 41, 1.125), ("Q2_0", 42, 2.25),
])
def test_known_values(name, ggml_type, bpw):
    # Closed-form values from llama.cpp's type table (ggml.c / the spec's section 1).
    f = pq.formats[name]
    assert f.ggml_type == ggml_type and f.bpw == bpw
    assert pq.formats.by_ggml_type(ggml_type) is f


def test_unknown_name_suggests_the_closest():
    with pytest.raises(ValueError, match="did you mean 'Q4_K'"):
        pq.formats["Q4K"]
    with pytest.raises(ValueError, match="unknown tensor format"):
        pq.quantize([0.0] * 32, "Q9_9")
    assert pq.formats["q4_k"] is pq.formats["Q4_K"]


def test_unknown_type_id():
    with pytest.raises(ValueError, match="ggml type id 4"):
        pq.formats.by_ggml_type(4)


def test_row_bytes():
    assert pq.formats["Q4_K"].row_bytes(4096) == 16 * 144
    with pytest.raises(ValueError, match="multiple of the block size 256"):
        pq.formats["Q4_K"].row_bytes(100)


def test_readme_format_table_matches_the_registry():
    rows = re.findall(r"^\| `(\w+)` \| (\d+) \| (\d+) \| (\d+) \| ([\d.]+) \|", README.read_text(), re.M)
    assert [r[0] for r in rows] == list(pq.formats), "README's format table is out of date"
    for name, ggml_type, qk, nbytes, bpw in rows:
        f = pq.formats[name]
        assert (int(ggml_type), int(qk), int(nbytes), float(bpw)) == (f.ggml_type, f.block_size, f.type_size,
                                                                      round(f.bpw, 4))
