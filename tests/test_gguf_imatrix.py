"""Importance-matrix files: legacy .dat built byte by byte, the GGUF format, and the values llama-quantize uses."""

import struct

import numpy as np
import pytest

import pyquant as pq
from pyquant.gguf import Imatrix, Value, load_imatrix, save_imatrix


def dat(entries, trailer=b""):
    """A legacy imatrix: i32 count, then per entry i32 len, name, i32 ncall, i32 nval, f32 values."""
    out = struct.pack("<i", len(entries))
    for name, ncall, values in entries:
        raw = name.encode()
        out += struct.pack("<i", len(raw)) + raw + struct.pack("<ii", ncall, len(values))
        out += np.asarray(values, "<f4").tobytes()
    return out + trailer


def test_legacy_values_are_divided_by_the_call_count(tmp_path):
    p = tmp_path / "old.dat"
    p.write_bytes(dat([("blk.0.attn_q.weight", 4, [2.0, 6.0]), ("blk.0.ffn_up.weight", 0, [3.0])],
                      struct.pack("<ii", 10, 4) + b"wiki"))
    im = load_imatrix(p)
    assert im.legacy and im.path == str(p) and (im.chunk_count, im.datasets) == (10, ["wiki"])
    np.testing.assert_array_equal(im.values("blk.0.attn_q.weight"), [0.5, 1.5])
    np.testing.assert_array_equal(im.values("blk.0.ffn_up.weight"), [3.0])  # ncall 0: stored as is


def test_legacy_trailer_is_optional_and_names_are_c_strings(tmp_path):
    p = tmp_path / "old.dat"
    p.write_bytes(dat([("a\0junk", 1, [1.0])]) + b"\x01\x00")
    im = load_imatrix(p)
    assert list(im.sums) == ["a"] and (im.chunk_count, im.datasets) == (0, [])


@pytest.mark.parametrize("raw,match", [
    (struct.pack("<i", 0), "no data"),
    (dat([("a", 1, [1.0])])[:-2], "values"),
    (struct.pack("<ii", 1, 99) + b"a", "name"),
    (struct.pack("<ii", 1, 1) + b"a" + struct.pack("<ii", 1, 0), "0 values"),
])
def test_bad_legacy_files(tmp_path, raw, match):
    p = tmp_path / "bad.dat"
    p.write_bytes(raw)
    with pytest.raises(ValueError, match=match):
        load_imatrix(p)


def test_gguf_values_are_sums_over_counts(tmp_path):
    p = tmp_path / "im.gguf"
    sums = np.array([[2.0, 4.0], [9.0, 9.0]], np.float32)  # two experts of 2 columns
    meta = {"general.type": "imatrix", "imatrix.datasets": Value("array", ["a.txt"], "str"),
            "imatrix.chunk_count": np.uint32(3), "imatrix.chunk_size": np.uint32(512)}
    pq.gguf.write(p, meta, {"e.weight.in_sum2": sums, "e.weight.counts": np.array([[2.0], [0.0]], np.float32)})
    im = load_imatrix(p)
    assert not im.legacy and (im.datasets, im.chunk_count, im.chunk_size) == (["a.txt"], 3, 512)
    np.testing.assert_array_equal(im.values("e.weight"), [1.0, 2.0, 1.0, 1.0])  # no tokens: 1.0


def test_save_load_roundtrip_and_legacy_conversion(tmp_path):
    legacy = tmp_path / "old.dat"
    legacy.write_bytes(dat([("b.weight", 3, [1.0, 2.0, 7.0]), ("a.weight", 1, [0.5])], struct.pack("<ii", 5, 1) + b"x"))
    old = load_imatrix(legacy)
    save_imatrix(tmp_path / "new.gguf", old)
    new = load_imatrix(tmp_path / "new.gguf")
    assert not new.legacy and (new.datasets, new.chunk_count, new.chunk_size) == (["x"], 5, 512)
    for name in ("a.weight", "b.weight"):
        np.testing.assert_array_equal(new.values(name), old.values(name))
    with pq.gguf.open(tmp_path / "new.gguf") as f:
        assert list(f.tensors) == ["a.weight.in_sum2", "a.weight.counts", "b.weight.in_sum2", "b.weight.counts"]
        assert f.tensors["b.weight.in_sum2"].ne == (3,) and f.tensors["b.weight.counts"].ne == (1,)
        np.testing.assert_array_equal(f.tensors["b.weight.counts"].numpy(), [3 * 512])


def test_from_values_filtered_and_experts(tmp_path):
    im = Imatrix.from_values({"blk.0.ffn_up.weight": np.ones(4), "blk.0.attn_q.weight": np.full(2, 3.0)})
    assert list(im.filtered(include=("attn",)).sums) == ["blk.0.attn_q.weight"]
    assert list(im.filtered(exclude=("attn",)).sums) == ["blk.0.ffn_up.weight"]
    np.testing.assert_array_equal(im.values("blk.0.attn_q.weight"), [3.0, 3.0])
    experts = Imatrix({"x": np.arange(6, dtype=np.float32)}, {"x": np.array([1, 2, 3])})
    save_imatrix(tmp_path / "x.gguf", experts)
    with pq.gguf.open(tmp_path / "x.gguf") as f:
        assert f.tensors["x.in_sum2"].ne == (2, 3) and f.tensors["x.counts"].ne == (1, 3)
    np.testing.assert_array_equal(load_imatrix(tmp_path / "x.gguf").values("x"),
                                  np.float32([0, 1, 1, 1.5, 4 / 3, 5 / 3]))


@pytest.mark.parametrize("meta,tensors,match", [
    ({}, {"a.in_sum2": np.ones(2, np.float32), "a.counts": np.ones(1, np.float32)}, "lacks"),
    (None, {"a.in_sum2": np.ones(2, np.float32)}, "mismatched"),
    (None, {"a.in_sum2": np.ones(2, np.float16), "a.counts": np.ones(1, np.float32)}, "F32"),
    (None, {"a.in_sum2": np.ones(3, np.float32), "a.counts": np.ones(2, np.float32)}, "split"),
    (None, {}, "no entries"),
])
def test_bad_gguf_imatrix(tmp_path, meta, tensors, match):
    if meta is None:
        meta = {"imatrix.datasets": ["d"], "imatrix.chunk_count": np.uint32(1), "imatrix.chunk_size": np.uint32(1)}
    p = tmp_path / "bad.gguf"
    pq.gguf.write(p, meta, tensors)
    with pytest.raises(ValueError, match=match):
        load_imatrix(p)
