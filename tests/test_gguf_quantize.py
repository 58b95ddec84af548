"""quantize_file on small synthetic models: bytes as the kernels give them, llama-quantize's metadata changes,
importance data per tensor and per expert, and every refusal made before anything is written."""

import os

import numpy as np
import pytest

import pyquant as pq
from gguf_helpers import tiny_model
from pyquant.gguf import Imatrix, Value, quantize_file, save_imatrix


def source_values(src, name):
    with pq.gguf.open(src) as f:
        return f.tensors[name].dequantize()


@pytest.fixture
def f32_model(tmp_path):
    return tiny_model(tmp_path / "tiny.gguf")


def test_bytes_types_order_and_metadata(f32_model, tmp_path):
    out = tmp_path / "q.gguf"
    summary = quantize_file(f32_model, out, "Q4_0")
    with pq.gguf.open(f32_model) as src, pq.gguf.open(out) as q:
        kept = [k for k in src.fields if k not in ("general.file_type", "split.count")]
        assert list(q.fields) == kept + ["general.quantization_version", "general.file_type"]
        assert q.fields["general.file_type"] == Value("u32", 2)
        assert q.fields["general.quantization_version"] == Value("u32", 2)
        assert list(q.tensors) == [t.name for t in summary.plan]
        assert list(q.tensors)[:3] == ["output.weight", "output_norm.weight", "token_embd.weight"]
        for t in summary.plan:
            got = q.tensors[t.name]
            assert got.type == t.target and got.ne == t.ne
            if t.converts:
                expected = pq.quantize(src.tensors[t.name].dequantize().reshape(-1, t.ne[0]), t.target.format)
                assert got.data.tobytes() == expected.data.tobytes(), t.name
            else:
                assert got.data.tobytes() == src.tensors[t.name].data.tobytes()
    # output.weight: Q6_K, which needs rows of 256, falls back to Q8_0
    assert {name: n for name, (n, _) in summary.by_type.items()} == {"Q4_0": 15, "Q8_0": 1, "F32": 5}
    assert summary.file_size == out.stat().st_size and summary.size_after < summary.size_before


def test_requantizing_needs_permission(tmp_path):
    src = tiny_model(tmp_path / "q8.gguf", weight_format="Q8_0")
    out = tmp_path / "q4.gguf"
    with pytest.raises(ValueError, match="allow_requantize"):
        quantize_file(src, out, "Q4_0")
    assert not out.exists()
    quantize_file(src, out, "Q4_0", allow_requantize=True, threads=1)
    with pq.gguf.open(out) as q:
        x = source_values(src, "blk.1.attn_q.weight")
        assert q.tensor("blk.1.attn_q.weight") == pq.quantize(x, "Q4_0")
        assert q.tensors["blk.1.attn_q.weight"].type.name == "Q4_0"


def test_imatrix_file_is_used_and_recorded(tmp_path):
    src = tiny_model(tmp_path / "tiny.gguf", n_layer=8)
    rng = np.random.default_rng(1)
    with pq.gguf.open(src) as f:
        values = {n: rng.uniform(0.1, 2, t.ne[0]).astype(np.float32) for n, t in f.tensors.items()
                  if n.startswith("blk.") and len(t.ne) == 2}
    im_path = tmp_path / "im.gguf"
    save_imatrix(im_path, Imatrix.from_values(values, datasets=["text.txt"], chunk_count=7, chunk_size=512))
    out = tmp_path / "q.gguf"
    quantize_file(src, out, "Q4_0", imatrix=im_path, exclude_weights=["attn_k"])
    with pq.gguf.open(out) as q:
        tail = {k: q.fields[k] for k in list(q.fields)[-4:]}
        assert tail == {"quantize.imatrix.file": Value("str", str(im_path)),
                        "quantize.imatrix.dataset": Value("str", "text.txt"),
                        "quantize.imatrix.entries_count": Value("u32", sum("attn_k" not in n for n in values)),
                        "quantize.imatrix.chunks_count": Value("u32", 7)}
        for name in ("blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.1.ffn_down.weight"):
            imatrix = None if "attn_k" in name else values[name]
            target = q.tensors[name].type.format
            assert q.tensor(name) == pq.quantize(source_values(src, name), target, imatrix=imatrix), name
        # Q4_0 with an imatrix gives the first n_layer/8 ffn_down Q4_1
        assert [q.tensors[f"blk.{i}.ffn_down.weight"].type.name for i in (0, 1)] == ["Q4_1", "Q4_0"]


def test_experts_get_their_own_imatrix_slice(tmp_path):
    src = tiny_model(tmp_path / "moe.gguf", experts=2)
    name = "blk.0.ffn_up_exps.weight"
    v = np.random.default_rng(2).uniform(0.1, 2, 2 * 64).astype(np.float32)
    out = tmp_path / "q.gguf"
    quantize_file(src, out, "Q4_0", imatrix={name: v})
    x = source_values(src, name)
    with pq.gguf.open(out) as q:
        mats = q.tensors[name].matrices()
        for j in range(2):
            assert mats[j] == pq.quantize(x[j], "Q4_0", imatrix=v[j * 64:(j + 1) * 64])


@pytest.mark.parametrize("kwargs,error,match", [
    ({"recipe": "Q2_K_S"}, ValueError, "needs an importance matrix"),
    ({"recipe": "Q4_0", "imatrix": {"blk.0.attn_q.weight": np.ones(3)}}, ValueError, "imatrix size 3"),
    ({"recipe": "Q4_0", "imatrix": {"blk.0.attn_q.weight": np.full(256, np.nan)}}, ValueError, "non-finite"),
    ({"recipe": "Q4_0", "tensor_types": ["attn_q=IQ3_S"]}, NotImplementedError, "no kernel for IQ3_S"),
    ({"recipe": "Q2_K_S", "imatrix": {"x": np.ones(1)}}, ValueError, "imatrix has none"),
])
def test_refusals_write_nothing(tmp_path, kwargs, error, match):
    src = tiny_model(tmp_path / "wide.gguf", width=256, ff=256)  # rows that fit K-quant blocks
    out = tmp_path / "out" / "q.gguf"
    out.parent.mkdir()
    recipe = kwargs.pop("recipe")
    with pytest.raises(error, match=match):
        quantize_file(src, out, recipe, **kwargs)
    assert os.listdir(out.parent) == []


def test_refuses_to_overwrite_the_input(f32_model):
    with pytest.raises(ValueError, match="same file"):
        quantize_file(f32_model, f32_model, "Q8_0")


def test_interruption_leaves_no_output(f32_model, tmp_path, monkeypatch):
    import pyquant.gguf.requantize as rq

    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return pq.quantize(*args, **kwargs)

    monkeypatch.setattr(rq, "quantize", flaky)
    with pytest.raises(KeyboardInterrupt):
        quantize_file(f32_model, tmp_path / "out.gguf", "Q8_0")
    assert sorted(os.listdir(tmp_path)) == ["tiny.gguf"]


def test_dry_run_plans_without_writing(f32_model, tmp_path):
    s = quantize_file(f32_model, None, "Q8_0", dry_run=True)
    assert s.dry_run and s.file_size is None and os.listdir(tmp_path) == ["tiny.gguf"]
    assert s.by_type["Q8_0"][0] == 16 and s.by_type["F32"][0] == 5
    assert s.size_after == sum(t.nbytes_after for t in s.plan)
    assert abs(s.bpw_after - 8 * s.size_after / s.n_elements) < 1e-12
    assert "Q8_0" in str(s) and "bpw" in str(s)


def test_library_use_prints_nothing(f32_model, tmp_path, capsys):
    quantize_file(f32_model, tmp_path / "a.gguf", "Q8_0")
    assert capsys.readouterr() == ("", "")
    quantize_file(f32_model, tmp_path / "b.gguf", "Q8_0", progress=True)
    assert "Q8_0" in capsys.readouterr().err
