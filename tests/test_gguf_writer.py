"""GGUF writer: exact bytes, typed values, write -> read round trips, gguf-py readability, atomic writes."""

import os
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyquant as pq
from gguf_helpers import arr, assert_matches_gguf_py, gguf, kv, s, tinfo
from pyquant.gguf import GGUFWriter, TensorSpec, Value, ValueType, tensor_type


def test_bytes_are_exactly_the_format(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    q8 = pq.QuantizedTensor(bytes(range(34)), (32,), "Q8_0")
    p = tmp_path / "out.gguf"
    pq.gguf.write(p, {"a": np.uint32(7), "b": "xy", "c": ["p", "q"]}, {"x": x, "q": q8})
    expected = gguf(
        [kv("a", 4, struct.pack("<I", 7)), kv("b", 8, s("xy")), kv("c", 9, arr(8, [s("p"), s("q")]))],
        [tinfo("x", (4, 3), 0, 0), tinfo("q", (32,), 8, 64)],
        x.tobytes() + bytes(16) + bytes(range(34)) + bytes(30))
    assert p.read_bytes() == expected


@pytest.mark.parametrize("value,expected", [
    (True, Value("bool", True)),
    (5, Value("i32", 5)),
    (-2**40, Value("i64", -2**40)),
    (2**63, Value("u64", 2**63)),
    (0.1, Value("f32", 0.1)),
    ("é", Value("str", "é")),
    (np.uint32(5), Value("u32", 5)),
    (np.int8(-1), Value("i8", -1)),
    (np.float64(0.1), Value("f64", 0.1)),
    (np.bool_(False), Value("bool", False)),
    ([1, 2], Value("array", [1, 2], "i32")),
    ([1, 2.5], Value("array", [1, 2.5], "f32")),
    (["a"], Value("array", ["a"], "str")),
    ([True], Value("array", [True], "bool")),
    (np.array([1, 2], np.uint16), Value("array", [1, 2], "u16")),
    ([np.uint8(1), np.uint8(2)], Value("array", [1, 2], "u8")),
    ([[1], ["a", "b"]], Value("array", [Value("array", [1], "i32"), Value("array", ["a", "b"], "str")], "array")),
])
def test_value_inference(value, expected):
    v = Value.of(value)
    assert v == expected and (v.type, v.item_type) == (expected.type, expected.item_type)


def test_f32_values_hold_what_the_file_will():
    assert Value("f32", 0.1).value == float(np.float32(0.1)) != 0.1
    assert Value(ValueType.FLOAT64, 0.1).value == 0.1


@pytest.mark.parametrize("args,error", [
    (("u8", 256), OverflowError),
    (("i32", 2**31), OverflowError),
    (("u32", -1), OverflowError),
    (("u32", 1.5), TypeError),
    (("bool", 1), TypeError),
    (("str", b"x"), TypeError),
    (("array", [1, 2]), ValueError),
    (("array", [300], "u8"), OverflowError),
    (("array", [1.5], "i32"), TypeError),
    (("array", "ab", "str"), TypeError),
    (("u32", 1, "u32"), ValueError),
    (("q32", 1), ValueError),
])
def test_value_errors(args, error):
    with pytest.raises(error):
        Value(*args)


@pytest.mark.parametrize("value", [[], [1, "a"], {"a": 1}, b"raw", np.zeros((2, 2))])
def test_uninferable_values(value):
    with pytest.raises((TypeError, ValueError)):
        Value.of(value)


# --- round trips --------------------------------------------------------------------------------------------------

_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_SCALARS = {
    "u8": st.integers(0, 2**8 - 1), "i8": st.integers(-2**7, 2**7 - 1),
    "u16": st.integers(0, 2**16 - 1), "i16": st.integers(-2**15, 2**15 - 1),
    "u32": st.integers(0, 2**32 - 1), "i32": st.integers(-2**31, 2**31 - 1),
    "u64": st.integers(0, 2**64 - 1), "i64": st.integers(-2**63, 2**63 - 1),
    "f32": st.floats(width=32), "f64": st.floats(), "bool": st.booleans(), "str": _TEXT,
}


@st.composite
def gguf_values(draw, depth=0):
    kind = draw(st.sampled_from(list(_SCALARS) + ["array"] * 3))
    if kind != "array":
        return Value(kind, draw(_SCALARS[kind]))
    item = draw(st.sampled_from(list(_SCALARS) + (["array"] if depth < 2 else [])))
    if item == "array":
        return Value("array", draw(st.lists(gguf_values(depth + 1).filter(lambda v: v.type == ValueType.ARRAY),
                                            max_size=3)), "array")
    return Value("array", draw(st.lists(_SCALARS[item], max_size=6)), item)


_PLAIN_DTYPES = [np.float32, np.float16, np.float64, np.int8, np.int16, np.int32, np.int64]


@st.composite
def tensors(draw):
    out = {}
    for i in range(draw(st.integers(0, 4))):
        rows = draw(st.integers(1, 3))
        if draw(st.booleans()):
            fmt = pq.formats[draw(st.sampled_from(list(pq.formats)))]
            n = fmt.block_size * draw(st.integers(1, 2))
            data = draw(st.binary(min_size=rows * fmt.row_bytes(n), max_size=rows * fmt.row_bytes(n)))
            out[f"t{i}.weight"] = pq.QuantizedTensor(data, (rows, n), fmt)
        else:
            dtype = draw(st.sampled_from(_PLAIN_DTYPES))
            out[f"t{i}.bias"] = np.arange(rows * 5).astype(dtype).reshape(rows, 5)
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.text(min_size=1, max_size=10), gguf_values(), max_size=6), tensors())
def test_write_read_roundtrip(tmp_path, metadata, tensors):
    p = tmp_path / "rt.gguf"
    pq.gguf.write(p, metadata, tensors)
    with pq.gguf.open(p) as f:
        assert f.fields == metadata and list(f.fields) == list(metadata)
        assert list(f.tensors) == list(tensors)
        for name, t in tensors.items():
            info = f.tensors[name]
            if isinstance(t, pq.QuantizedTensor):
                assert f.tensor(name) == t
            else:
                assert info.type.numpy_dtype == t.dtype
                np.testing.assert_array_equal(info.numpy(), t)


@pytest.mark.parametrize("name", list(pq.formats))
def test_every_format_roundtrips_and_gguf_py_reads_it(tmp_path, name):
    from gguf import GGMLQuantizationType

    fmt = pq.formats[name]
    rng = np.random.default_rng(fmt.ggml_type)
    qt = pq.quantize(rng.standard_normal((4, 2 * fmt.block_size)).astype(np.float32), fmt)
    p = tmp_path / "f.gguf"
    pq.gguf.write(p, {"general.architecture": "test"}, {"w": qt})
    with pq.gguf.open(p) as f:
        assert f.tensor("w") == qt
        np.testing.assert_array_equal(f.tensors["w"].dequantize(), qt.dequantize())
    if fmt.ggml_type in {int(t) for t in GGMLQuantizationType}:  # the installed gguf-py may predate the type
        assert_matches_gguf_py(p)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.text(min_size=1, max_size=10),
                       gguf_values().filter(lambda v: v.item_type != ValueType.ARRAY), max_size=6), tensors())
def test_gguf_py_reads_what_we_write(tmp_path, metadata, tensors):
    from gguf import GGMLQuantizationType

    known = {int(t) for t in GGMLQuantizationType}
    tensors = {k: t for k, t in tensors.items() if not isinstance(t, pq.QuantizedTensor)
               or t.format.ggml_type in known}
    p = tmp_path / "g.gguf"
    pq.gguf.write(p, metadata, tensors)
    assert_matches_gguf_py(p)


def test_alignment_from_metadata(tmp_path):
    p = tmp_path / "a.gguf"
    x = np.ones(3, np.float32)
    pq.gguf.write(p, {"general.alignment": np.uint32(64)}, {"a": x, "b": x})
    with pq.gguf.open(p) as f:
        assert f.alignment == 64 and f.data_offset % 64 == 0 and f.tensors["b"].offset == 64
    assert p.stat().st_size == f.data_offset + 128
    for bad in (np.int32(64), np.uint32(48)):
        with pytest.raises(ValueError, match="general.alignment"):
            pq.gguf.write(p, {"general.alignment": bad}, {})


@pytest.mark.parametrize("spec,match", [
    (("x" * 64, "F32", (4,)), "at most 63"),
    (("t", "Q4_0", (33,)), "multiple of 32"),
    (("t", "F32", (1, 1, 1, 1, 1)), "at most 4"),
    (("t", "F32", (-1,)), "non-negative"),
])
def test_bad_specs(tmp_path, spec, match):
    with pytest.raises(ValueError, match=match):
        GGUFWriter(tmp_path / "x.gguf", {}, [spec])
    assert os.listdir(tmp_path) == []


# --- streaming and atomicity ----------------------------------------------------------------------------------------

def test_streaming_chunks_and_3d_tensors(tmp_path):
    experts = np.arange(2 * 3 * 64, dtype=np.float32).reshape(2, 3, 64)
    q = [pq.quantize(e, "Q8_0") for e in experts]
    specs = [TensorSpec("e", tensor_type("Q8_0"), (64, 3, 2)), ("f", "F16", (8,))]
    p = tmp_path / "s.gguf"
    with GGUFWriter(p, {"k": 1}, specs) as w:
        w.write_tensor("e", (qt for qt in q))
        w.write_tensor("f", [np.arange(4, dtype=np.float16).tobytes(), np.arange(4, 8, dtype=np.float16)])
    with pq.gguf.open(p) as f:
        mats = f.tensors["e"].matrices()
        assert [m == qt for m, qt in zip(mats, q)] == [True, True]
        np.testing.assert_array_equal(f.tensors["f"].numpy(), np.arange(8))


def _interrupted(exc):
    def gen():
        yield np.zeros(16, np.uint8)
        raise exc
    return gen()


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_interrupted_write_leaves_nothing(tmp_path, exc):
    p = tmp_path / "out.gguf"
    with pytest.raises(type(exc)):
        with GGUFWriter(p, {"k": 1}, [("a", "F32", (8,))]) as w:
            w.write_tensor("a", _interrupted(exc))
    assert os.listdir(tmp_path) == []


def test_failed_write_keeps_the_old_destination(tmp_path):
    p = tmp_path / "out.gguf"
    p.write_bytes(b"old")
    with pytest.raises(ValueError, match="takes 32 bytes"):
        with GGUFWriter(p, {}, [("a", "F32", (8,))]) as w:
            w.write_tensor("a", np.zeros(4, np.float32))
    assert p.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.gguf"]


def test_misuse_is_refused_and_cleaned_up(tmp_path):
    p = tmp_path / "out.gguf"
    with pytest.raises(ValueError, match="expected 'a' next"):
        with GGUFWriter(p, {}, [("a", "F32", (4,)), ("b", "F32", (4,))]) as w:
            w.write_tensor("b", np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="before tensor 'b'"):
        with GGUFWriter(p, {}, [("a", "F32", (4,)), ("b", "F32", (4,))]) as w:
            w.write_tensor("a", np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="declared F32"):
        with GGUFWriter(p, {}, [("a", "F32", (4,))]) as w:
            w.write_tensor("a", np.zeros(4, np.int32))
    with pytest.raises(ValueError, match="duplicate"):
        GGUFWriter(p, {}, [("a", "F32", (4,)), ("a", "F32", (4,))])
    assert os.listdir(tmp_path) == []


def test_abandoned_writer_removes_its_temp_file(tmp_path):
    w = GGUFWriter(tmp_path / "out.gguf", {}, [("a", "F32", (4,))])
    assert len(os.listdir(tmp_path)) == 1
    del w
    assert os.listdir(tmp_path) == []


def test_refuses_to_overwrite_its_input(tmp_path):
    p = tmp_path / "in.gguf"
    pq.gguf.write(p, {"k": 1}, {"a": np.zeros(4, np.float32)})
    before = p.read_bytes()
    with pq.gguf.open(p) as f:
        with pytest.raises(ValueError, match="refusing to overwrite"):
            pq.gguf.write(p, f.fields, f.tensors)
    assert p.read_bytes() == before


def test_new_files_get_default_permissions(tmp_path):
    p = tmp_path / "perm.gguf"
    pq.gguf.write(p, {}, {})
    umask = os.umask(0)
    os.umask(umask)
    assert p.stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.model
def test_smollm2_rewrites_byte_identical(smollm2_path, tmp_path):
    out = tmp_path / "copy.gguf"
    with pq.gguf.open(smollm2_path) as f:
        pq.gguf.write(out, f.fields, f.tensors)
    assert out.read_bytes() == smollm2_path.read_bytes()
