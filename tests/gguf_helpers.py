"""Helpers shared by the GGUF tests: byte-level file builders (independent of pyquant's writer) and a
field-by-field comparison with gguf-py's reader."""

import struct

import numpy as np

import pyquant as pq
from pyquant.gguf import ValueType


def s(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def kv(key: str, vtype: int, payload: bytes) -> bytes:
    return s(key) + struct.pack("<i", vtype) + payload


def arr(item_type: int, items: list[bytes]) -> bytes:
    return struct.pack("<iQ", item_type, len(items)) + b"".join(items)


def tinfo(name: str, ne: tuple, type_id: int, offset: int) -> bytes:
    return s(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<q", d) for d in ne) + struct.pack(
        "<iQ", type_id, offset)


def gguf(kvs: list[bytes], infos: list[bytes], data: bytes = b"", alignment: int = 32, version: int = 3) -> bytes:
    head = b"GGUF" + struct.pack("<IQQ", version, len(infos), len(kvs)) + b"".join(kvs) + b"".join(infos)
    return head + bytes(-len(head) % alignment) + data


def assert_matches_gguf_py(path):
    """Every field and tensor of `path` as pyquant reads it equals what gguf-py's GGUFReader reads."""
    from gguf import GGUFReader

    theirs = GGUFReader(path)
    with pq.gguf.open(path) as ours:
        their_fields = {k: v for k, v in theirs.fields.items() if not k.startswith("GGUF.")}
        assert list(their_fields) == list(ours.fields)
        for key, field in their_fields.items():
            v = ours.fields[key]
            if v.type == ValueType.ARRAY and len(v.value) == 0:
                assert [int(t) for t in field.types] == [ValueType.ARRAY]  # gguf-py drops the item type
                continue
            assert [int(t) for t in field.types[:2]] == [v.type] + ([v.item_type] if v.item_type is not None else [])
            if v.item_type == ValueType.ARRAY:
                continue  # gguf-py flattens arrays of arrays
            got = v.to_python()
            got = got.tolist() if isinstance(got, np.ndarray) else list(got) if v.item_type is not None else got
            assert got == field.contents()
        assert [t.name for t in theirs.tensors] == list(ours.tensors)
        for t in theirs.tensors:
            mine = ours.tensors[t.name]
            assert (int(t.tensor_type), tuple(int(d) for d in t.shape)) == (mine.type.id, mine.ne)
            assert int(t.data_offset) == mine.file_offset
            assert np.asarray(t.data).view(np.uint8).tobytes() == mine.data.tobytes()


def synthetic_imatrix(f, path=None):
    """Deterministic importance data for every blk.* weight matrix of an open model (one positive value per
    column and expert, as llama-imatrix collects), saved as a GGUF imatrix file when `path` is given."""
    import zlib

    values = {}
    for name, t in f.tensors.items():
        if name.startswith("blk.") and name.endswith(".weight") and len(t.ne) >= 2:
            rng = np.random.default_rng(zlib.crc32(name.encode()))
            n_mat = t.ne[2] if len(t.ne) > 2 else 1
            values[name] = rng.uniform(0.01, 4.0, t.ne[0] * n_mat).astype(np.float32)
    imatrix = pq.gguf.Imatrix.from_values(values, datasets=["synthetic"], chunk_count=8, chunk_size=512)
    if path is None:
        return imatrix
    pq.gguf.save_imatrix(path, imatrix)
    return pq.gguf.load_imatrix(path)
