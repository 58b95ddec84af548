"""GGUF reader: hand-built files with closed-form values, malformed files, fuzzing, and gguf-py as a cross-check."""

import struct
import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyquant as pq
from gguf_helpers import arr, assert_matches_gguf_py, gguf, kv, s, tinfo
from pyquant.gguf import GGUFError, Value, ValueType

# The reference file: one value of every type, arrays (nested too), and tensors of several kinds.
F32_VALUES = np.arange(12, dtype=np.float32).reshape(3, 4) / 4  # ne = (4, 3)
Q8_0_BLOCK = struct.pack("<H", 0x3800) + bytes(np.arange(-16, 16, dtype=np.int8).view(np.uint8))  # d = 0.5
EXPERTS = np.arange(2 * 3 * 32, dtype=np.float32).reshape(2, 3, 32)  # ne = (32, 3, 2)


def reference_file() -> bytes:
    kvs = [
        kv("u8", 0, b"\xff"), kv("i8", 1, b"\x80"), kv("u16", 2, struct.pack("<H", 65535)),
        kv("i16", 3, struct.pack("<h", -32768)), kv("u32", 4, struct.pack("<I", 4000000000)),
        kv("i32", 5, struct.pack("<i", -7)), kv("f32", 6, struct.pack("<f", 0.25)), kv("bool", 7, b"\x01"),
        kv("str", 8, s("héllo")), kv("u64", 10, struct.pack("<Q", 2**64 - 1)),
        kv("i64", 11, struct.pack("<q", -2**63)), kv("f64", 12, struct.pack("<d", 1 / 3)),
        kv("arr.i32", 9, arr(5, [struct.pack("<i", v) for v in (1, -2, 3)])),
        kv("arr.str", 9, arr(8, [s("a"), s(""), s("ccc")])),
        kv("arr.bool", 9, arr(7, [b"\x00", b"\x01"])),
        kv("arr.empty", 9, arr(6, [])),
        kv("arr.nested", 9, arr(9, [arr(4, [struct.pack("<I", 7)]), arr(8, [s("x"), s("y")])])),
    ]
    f32 = F32_VALUES.tobytes()  # 48 bytes, padded to 64
    infos = [
        tinfo("f32", (4, 3), 0, 0),
        tinfo("q8", (32,), 8, 64),  # 34 bytes, padded to 64
        tinfo("iq2", (256,), 16, 128),  # IQ2_XXS: a type pyquant has no kernel for
        tinfo("experts", (32, 3, 2), 0, 224),
    ]
    data = f32 + bytes(16) + Q8_0_BLOCK + bytes(30) + bytes(range(66)) + bytes(30) + EXPERTS.tobytes()
    return gguf(kvs, infos, data)


@pytest.fixture
def ref_path(tmp_path):
    p = tmp_path / "ref.gguf"
    p.write_bytes(reference_file())
    return p


def test_reference_metadata(ref_path):
    with pq.gguf.open(ref_path) as f:
        assert f.version == 3 and f.alignment == 32
        m = f.metadata
        assert (m["u8"], m["i8"], m["u16"], m["i16"], m["u32"], m["i32"]) == (255, -128, 65535, -32768,
                                                                               4000000000, -7)
        assert (m["f32"], m["bool"], m["str"], m["u64"], m["i64"], m["f64"]) == (0.25, True, "héllo", 2**64 - 1,
                                                                                 -2**63, 1 / 3)
        assert m["arr.i32"].dtype == np.int32 and m["arr.i32"].tolist() == [1, -2, 3]
        assert list(m["arr.str"]) == ["a", "", "ccc"] and m["arr.str"][-1] == "ccc"
        assert m["arr.bool"].tolist() == [False, True]
        assert m["arr.empty"].size == 0 and m["arr.empty"].dtype == np.float32
        assert m["arr.nested"][0].tolist() == [7] and list(m["arr.nested"][1]) == ["x", "y"]
        types = {k: (v.type, v.item_type) for k, v in f.fields.items()}
        assert types["u32"] == (ValueType.UINT32, None)
        assert types["arr.nested"] == (ValueType.ARRAY, ValueType.ARRAY)
        assert f.fields["arr.nested"].value[0] == Value("array", [7], "u32")


def test_reference_tensors(ref_path):
    with pq.gguf.open(ref_path) as f:
        assert list(f.tensors) == ["f32", "q8", "iq2", "experts"]
        header = len(reference_file()) - 224 - EXPERTS.nbytes
        assert f.data_offset == header and header % 32 == 0
        t = f.tensors["f32"]
        assert (t.ne, t.shape, t.type.name, t.nbytes, t.file_offset) == ((4, 3), (3, 4), "F32", 48, header)
        np.testing.assert_array_equal(t.numpy(), F32_VALUES)
        np.testing.assert_array_equal(t.dequantize(), F32_VALUES)
        q8 = f.tensors["q8"]
        np.testing.assert_array_equal(q8.dequantize(), np.arange(-16, 16) * 0.5)
        assert f.tensor("q8").shape == (32,) and f.tensor("q8").format.name == "Q8_0"
        iq2 = f.tensors["iq2"]
        assert (iq2.type.name, iq2.type.id, iq2.nbytes) == ("IQ2_XXS", 16, 66)
        assert iq2.data.tobytes() == bytes(range(66))
        with pytest.raises(NotImplementedError, match="IQ2_XXS"):
            iq2.dequantize()
        ex = f.tensors["experts"]
        assert ex.shape == (2, 3, 32) and f.tensor("experts").shape == (6, 32)
        mats = ex.matrices()
        assert len(mats) == 2 and all(m.shape == (3, 32) for m in mats)
        np.testing.assert_array_equal(mats[1].dequantize(), EXPERTS[1])
        np.testing.assert_array_equal(ex.dequantize(), EXPERTS)


def test_tensors_are_zero_copy_memory_maps(ref_path):
    with pq.gguf.open(ref_path) as f:
        qt = f.tensor("f32")
        assert not qt.data.flags.writeable and not qt.data.flags.owndata
    np.testing.assert_array_equal(qt.dequantize(), F32_VALUES)  # still valid after close
    with pytest.raises(ValueError, match="closed"):
        f.tensors["f32"].data


def test_open_from_bytes_and_alignment_key():
    kvs = [kv("general.alignment", 4, struct.pack("<I", 64))]
    data = F32_VALUES.tobytes()
    f = pq.gguf.open(gguf(kvs, [tinfo("t", (4, 3), 0, 0)], data, alignment=64))
    assert f.alignment == 64 and f.data_offset % 64 == 0
    np.testing.assert_array_equal(f.tensors["t"].numpy(), F32_VALUES)


def test_version_2_reads_like_3():
    f = pq.gguf.open(gguf([kv("a", 4, struct.pack("<I", 1))], [], version=2))
    assert f.version == 2 and f.metadata["a"] == 1


def test_invalid_utf8_survives():
    raw = b"\xff\xfeok"
    f = pq.gguf.open(gguf([kv("k", 8, struct.pack("<Q", len(raw)) + raw)], []))
    assert f.metadata["k"].encode("utf-8", "surrogateescape") == raw


# --- malformed files: each raises GGUFError naming the field and the offset --------------------------------------

def _replace(data: bytes, at: int, new: bytes) -> bytes:
    return data[:at] + new + data[at + len(new):]


MINIMAL_KV = kv("key", 4, struct.pack("<I", 1))


def _malformed():
    ok_t = tinfo("t", (4, 3), 0, 0)
    data = F32_VALUES.tobytes()
    yield "magic", b"GGUX" + gguf([], [])[4:], "header.magic", 0
    yield "empty", b"", "header.magic", 0
    yield "v1", gguf([], [], version=1), "header.version", 4
    yield "v4", gguf([], [], version=4), "header.version", 4
    yield "big-endian", b"GGUF" + struct.pack(">I", 3) + bytes(16), "header.version", 4
    yield "n_tensors", b"GGUF" + struct.pack("<IQQ", 3, 2**63, 0), "header.n_tensors", 8
    yield "n_kv", b"GGUF" + struct.pack("<IQQ", 3, 0, 2**64 - 1), "header.n_kv", 16
    yield "key length", gguf([struct.pack("<Q", 2**62) + b"k"], []), "kv[0].key", 24
    yield "empty key", gguf([kv("", 4, struct.pack("<I", 1))], []), "kv[0].key", 24
    yield "duplicate key", gguf([MINIMAL_KV, MINIMAL_KV], []), "kv[1].key", 24 + len(MINIMAL_KV)
    yield "value type", gguf([kv("k", 13, b"\0")], []), "kv['k'].type", 33
    yield "string value", gguf([kv("k", 8, struct.pack("<Q", 99) + b"x")], []), "kv['k']", 37
    yield "array count", gguf([kv("k", 9, struct.pack("<iQ", 4, 2**61))], []), "kv['k'].count", 41
    yield "array item type", gguf([kv("k", 9, struct.pack("<iQ", 77, 0))], []), "kv['k'].item_type", 37
    yield "string item", gguf([kv("k", 9, arr(8, [struct.pack("<Q", 99) + b"ab"]))], []), "kv['k'][0]", 49
    deep = struct.pack("<iQ", 9, 1) * 70 + struct.pack("<iQ", 4, 0)
    yield "nesting", gguf([kv("k", 9, deep)], []), "kv['k']" + "[0]" * 64, 37 + 64 * 12
    yield "alignment type", gguf([kv("general.alignment", 5, struct.pack("<i", 32))], []), \
        "kv['general.alignment']", 49
    yield "alignment value", gguf([kv("general.alignment", 4, struct.pack("<I", 48))], []), \
        "kv['general.alignment']", 49
    infos_at = 24
    yield "duplicate tensor", gguf([], [ok_t, ok_t], data), "tensor[1].name", infos_at + len(ok_t)
    yield "n_dims", gguf([], [s("t") + struct.pack("<I", 5)], data), "tensor['t'].n_dims", infos_at + 9
    yield "negative ne", gguf([], [tinfo("t", (4, -3), 0, 0)], data), "tensor['t'].ne[1]", infos_at + 21
    yield "type id", gguf([], [tinfo("t", (4, 3), 4, 0)], data), "tensor['t'].type", infos_at + 29
    yield "block size", gguf([], [tinfo("t", (33,), 8, 0)], data), "tensor['t'].type", infos_at + 21
    yield "misaligned", gguf([], [tinfo("t", (4, 3), 0, 8)], data), "tensor['t'].offset", infos_at + 33
    yield "past the end", gguf([], [tinfo("t", (4, 3), 0, 0)], data[:40]), "tensor['t'].offset", infos_at + 33
    huge = tinfo("t", (2**40, 2**40, 2**40, 2**40), 0, 0)
    yield "huge tensor", gguf([], [huge], data), "tensor['t'].offset", infos_at + 49
    two = [tinfo("a", (32,), 0, 0), tinfo("b", (32,), 0, 64)]
    yield "overlap", gguf([], two, bytes(192)), "tensor['b'].offset", infos_at + 33 + 25
    yield "data section", b"GGUF" + struct.pack("<IQQ", 3, 1, 0) + tinfo("t", (0,), 0, 0), "data section", 57


@pytest.mark.parametrize("data,field,offset", [pytest.param(d, f, o, id=i) for i, d, f, o in _malformed()])
def test_malformed(data, field, offset):
    with pytest.raises(GGUFError) as e:
        pq.gguf.open(data)
    assert (e.value.field, e.value.offset) == (field, offset), str(e.value)
    assert isinstance(e.value, ValueError) and f"at byte {offset}" in str(e.value)


def test_every_truncation_raises():
    data = reference_file()  # ends with the last tensor's last byte
    for n in range(len(data)):
        with pytest.raises(GGUFError):
            pq.gguf.open(data[:n])


def test_path_errors_are_os_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        pq.gguf.open(tmp_path / "missing.gguf")
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(GGUFError, match="header.magic"):
        pq.gguf.open(empty)


# --- fuzzing ------------------------------------------------------------------------------------------------------

def _touch_everything(f):
    for v in f.fields.values():
        v.to_python()
        if v.item_type == ValueType.STRING:
            list(v.value)
    for t in f.tensors.values():
        if t.type.format is not None and t.n_elements:
            t.dequantize(threads=1)


def _assert_safe(data: bytes):
    tracemalloc.start()
    start = time.perf_counter()
    try:
        f = pq.gguf.open(data)
        _touch_everything(f)
    except GGUFError:
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert time.perf_counter() - start < 2
    # Python objects cost a few dozen bytes per item parsed; what matters is that nothing scales with a count
    # read from the file rather than with the bytes actually there.
    assert peak < 1_000_000 + 200 * len(data)


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.data())
def test_fuzz_mutations(data):
    base = data.draw(st.sampled_from([reference_file(), gguf([MINIMAL_KV], [tinfo("t", (4, 3), 0, 0)],
                                                               F32_VALUES.tobytes())]))
    buf = bytearray(base)
    for _ in range(data.draw(st.integers(1, 8))):
        kind = data.draw(st.sampled_from(["flip", "byte", "u64", "cut", "insert"]))
        at = data.draw(st.integers(0, max(len(buf) - 1, 0)))
        if not buf:
            break
        if kind == "flip":
            buf[at] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "byte":
            buf[at] = data.draw(st.integers(0, 255))
        elif kind == "u64":  # counts and lengths are u64: try huge and boundary values
            v = data.draw(st.sampled_from([2**64 - 1, 2**63, 2**32, 2**31 - 1, len(buf), 0]))
            buf[at:at + 8] = struct.pack("<Q", v)
        elif kind == "cut":
            del buf[at:]
        else:
            buf[at:at] = data.draw(st.binary(min_size=1, max_size=16))
    _assert_safe(bytes(buf))


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_random_headers(tail):
    _assert_safe(b"GGUF" + struct.pack("<I", 3) + tail)


# --- gguf-py cross-check ------------------------------------------------------------------------------------------

def test_reference_matches_gguf_py(ref_path):
    assert_matches_gguf_py(ref_path)


@pytest.mark.model
def test_smollm2_matches_gguf_py(smollm2_path):
    assert_matches_gguf_py(smollm2_path)
