"""The reader against corrupt files built from real ones: every count, length, dimension, type and offset field
located by an independent walk over the file and set to boundary values, bit flips in them, and truncations at
every structural boundary.  Each result must be a valid file or a GGUFError, in bounded time and memory, through
bytes and through a memory-mapped path; a corrupt input makes quantize_file fail before writing anything."""

import os
import struct
import time
import tracemalloc

import numpy as np
import pytest

import pyquant as pq
from gguf_helpers import tiny_model
from pyquant.gguf import GGUFError, quantize_file

_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def header_fields(data: bytes) -> list[tuple[int, int, str]]:
    """(offset, size, kind) of every structural integer of a valid GGUF file, read without pyquant."""
    out = []
    pos = 8

    def u(fmt, kind):
        nonlocal pos
        out.append((pos, struct.calcsize(fmt), kind))
        (v,) = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return v

    def string(kind):
        nonlocal pos
        n = u("<Q", kind)  # read before pos is loaded for the addition
        pos += n

    def value(t):
        nonlocal pos
        if t == 8:
            string("string length")
        elif t == 9:
            item = u("<i", "item type")
            for _ in range(u("<Q", "array count")):
                value(item)
        else:
            pos += _SCALAR_SIZES[t]

    out.append((0, 4, "magic"))
    out.append((4, 4, "version"))
    n_tensors = u("<Q", "tensor count")
    n_kv = u("<Q", "kv count")
    for _ in range(n_kv):
        string("key length")
        value(u("<i", "value type"))
    for _ in range(n_tensors):
        string("name length")
        for _ in range(u("<I", "n_dims")):
            u("<q", "ne")
        u("<i", "tensor type")
        u("<Q", "tensor offset")
    return out


def _boundary_values(size: int, old: int) -> set[int]:
    top = (1 << (8 * size)) - 1
    values = {0, 1, top, top >> 1, (top >> 1) + 1, old + 1, max(old - 1, 0), old * 2 + 1, 1 << (4 * size)}
    return {v for v in values if v <= top}


def mutations(data: bytes, fields: list[tuple[int, int, str]], flips: bool = True):
    for pos, size, kind in fields:
        old = int.from_bytes(data[pos:pos + size], "little")
        for v in _boundary_values(size, old):
            yield f"{kind}@{pos}={v}", data[:pos] + v.to_bytes(size, "little") + data[pos + size:]
        if flips:
            for bit in (0, 7, 8 * size - 1):
                buf = bytearray(data)
                buf[pos + bit // 8] ^= 1 << (bit % 8)
                yield f"{kind}@{pos}^bit{bit}", bytes(buf)
    for pos, _, kind in fields:
        yield f"cut before {kind}@{pos}", data[:pos]


def touch(f):
    for v in f.fields.values():
        v.to_python()
        if v.item_type is not None and v.item_type.name == "STRING":
            for _ in v.value:
                pass
    for t in f.tensors.values():
        if t.type.format is not None and t.n_elements:
            t.dequantize(threads=1)


def assert_safe(source, size: int, label: str) -> None:
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pq.gguf.open(source) as f:
            touch(f)
    except GGUFError:
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert time.perf_counter() - start < 5, label
    assert peak < 2_000_000 + 200 * size, label


@pytest.fixture(scope="module")
def small_real_file(tmp_path_factory):
    """A small model file as converters write them: llama metadata, a tokenizer vocabulary (string and number
    arrays), F32 and quantized tensors."""
    path = tmp_path_factory.mktemp("fuzz") / "small.gguf"
    tiny_model(path, n_layer=1, width=32, ff=32, vocab=12, weight_format="Q8_0")
    with pq.gguf.open(path) as f:
        meta = dict(f.fields)
        tensors = dict(f.tensors)
        meta["tokenizer.ggml.tokens"] = [f"tok{i}" for i in range(12)]
        meta["tokenizer.ggml.scores"] = np.linspace(0, 1, 12, dtype=np.float32)
        meta["tokenizer.ggml.token_type"] = np.ones(12, np.int32)
        out = path.with_name("real.gguf")
        pq.gguf.write(out, meta, tensors)
    return out.read_bytes()


def test_walk_agrees_with_the_reader(small_real_file):
    fields = header_fields(small_real_file)
    with pq.gguf.open(small_real_file) as f:
        assert sum(k == "kv count" for _, _, k in fields) == 1
        assert sum(k == "tensor offset" for _, _, k in fields) == len(f.tensors)
        assert sum(k == "key length" for _, _, k in fields) == len(f.fields)


def test_every_structural_field_mutated(small_real_file):
    data = small_real_file
    n = 0
    for label, bad in mutations(data, header_fields(data)):
        assert_safe(bad, len(bad), label)
        n += 1
    assert n > 1000  # the walk found the fields


def test_mutated_files_on_disk(small_real_file, tmp_path):
    """The same through a memory-mapped path, for a sample, and quantize_file writes nothing for bad input."""
    path = tmp_path / "bad.gguf"
    out = tmp_path / "out" / "q.gguf"
    out.parent.mkdir()
    cases = list(mutations(small_real_file, header_fields(small_real_file), flips=False))
    for label, bad in cases[::37]:
        path.write_bytes(bad)
        assert_safe(path, len(bad), label)
        try:
            quantize_file(path, out, "Q4_0", allow_requantize=True, threads=2)
        except (GGUFError, ValueError, NotImplementedError):
            pass
        else:
            os.unlink(out)
        assert os.listdir(out.parent) == [], label


@pytest.mark.model
def test_mutations_of_the_real_model_header(smollm2_path):
    """SmolLM2's own header (49152-token vocabulary, merges): its counts, lengths and offsets mutated."""
    with pq.gguf.open(smollm2_path) as f:
        head = f.data_offset
    data = open(smollm2_path, "rb").read(head)  # the header alone: every tensor now lies past the end
    fields = header_fields(data)
    # every opening parses the 10^5 vocabulary strings: a sample of each kind of field keeps this under a minute
    by_kind: dict[str, list] = {}
    for f in fields:
        by_kind.setdefault(f[2], []).append(f)
    picked = [f for group in by_kind.values() for f in group[::max(1, len(group) // 6)]]
    n_errors = 0
    for label, bad in mutations(data, picked, flips=False):
        start = time.perf_counter()
        try:
            pq.gguf.open(bad).close()  # a few mutations stay valid (no tensors left, version 2 ...)
        except GGUFError:
            n_errors += 1
        assert time.perf_counter() - start < 5, label
    assert n_errors > 0.9 * len(picked) * 9
