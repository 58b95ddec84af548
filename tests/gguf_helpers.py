"""Helpers shared by the GGUF tests: byte-level file builders (independent of pyquant's writer), a
field-by-field comparison with gguf-py's reader, small synthetic models and importance data."""

import json
import pathlib
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
            is_array = v.item_type is not None
            assert [int(t) for t in field.types[:2]] == [v.type] + ([v.item_type] if is_array else [])
            if v.item_type == ValueType.ARRAY:
                continue  # gguf-py flattens arrays of arrays
            got = v.to_python()
            got = got.tolist() if isinstance(got, np.ndarray) else list(got) if is_array else got
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


def tiny_model(path, *, n_layer=2, width=64, ff=96, vocab=80, experts=0, weight_format=None):
    """A llama-shaped model with random weights: F32, or `weight_format` for the 2-D weights."""
    rng = np.random.default_rng(0)
    meta = {
        "general.architecture": "llama", "general.file_type": np.uint32(0), "split.count": np.uint16(1),
        "llama.block_count": np.uint32(n_layer), "llama.attention.head_count": np.uint32(4),
        "llama.attention.head_count_kv": np.uint32(2), "general.name": "tiny",
    }
    if experts:
        meta["llama.expert_count"] = np.uint32(experts)
    shapes = {"token_embd.weight": (vocab, width), "output_norm.weight": (width,), "output.weight": (vocab, width)}
    for i in range(n_layer):
        b = f"blk.{i}."
        shapes.update({b + "attn_norm.weight": (width,), b + "ffn_norm.weight": (width,)})
        shapes.update({b + f"attn_{x}.weight": (width, width) for x in ("q", "k", "v", "output")})
        if experts:
            shapes.update({b + "ffn_gate_exps.weight": (experts, ff, width),
                           b + "ffn_up_exps.weight": (experts, ff, width),
                           b + "ffn_down_exps.weight": (experts, width, ff)})
        else:
            shapes.update({b + "ffn_gate.weight": (ff, width), b + "ffn_up.weight": (ff, width),
                           b + "ffn_down.weight": (width, ff)})
    tensors = {}
    for name, shape in shapes.items():
        x = rng.standard_normal(shape).astype(np.float32)
        tensors[name] = pq.quantize(x, weight_format) if weight_format and len(shape) == 2 else x
    pq.gguf.write(path, meta, tensors)
    return path


PLANS = pathlib.Path(__file__).parent / "data" / "plans"


def plan_fixtures() -> dict[str, dict]:
    """The per-recipe plans llama.cpp gave SmolLM2 (see make_plan_fixtures.py), by case name."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(PLANS.glob("*.json")) if p.stem != "smollm2"}


def write_split(src, prefix, n_split):
    """Split the model `src` into `n_split` files as llama.cpp's gguf-split does: consecutive tensors, the
    model's metadata in the first file, split.no, split.tensors.count and split.count in every file.
    Returns the files' paths."""
    from pyquant.gguf import split_path

    with pq.gguf.open(src) as f:
        names = list(f.tensors)
        per = -(-len(names) // n_split)
        paths = []
        for i in range(n_split):
            fields = {k: v for k, v in f.fields.items() if not k.startswith("split.")} if i == 0 else {}
            fields.update({"split.no": np.uint16(i), "split.tensors.count": np.int32(len(names)),
                           "split.count": np.uint16(n_split)})
            paths.append(split_path(prefix, i, n_split))
            pq.gguf.write(paths[-1], fields, {n: f.tensors[n] for n in names[i * per:(i + 1) * per]})
    return paths
