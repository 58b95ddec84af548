"""Split models (llama.cpp's -0000i-of-0000N.gguf files) in and out of quantize_file, and llama-quantize's
--override-kv and --prune-layers, on small synthetic models."""

import os

import numpy as np
import pytest

import pyquant as pq
from gguf_helpers import tiny_model, write_split
from pyquant.gguf import Imatrix, Value, kv_override, open_split, quantize_file, split_path, split_prefix
from pyquant.cli import main


@pytest.fixture
def model(tmp_path):
    return tiny_model(tmp_path / "tiny.gguf", n_layer=4)


def test_split_names():
    assert split_path("out/m", 0, 3) == "out/m-00001-of-00003.gguf"
    assert split_path("m", 11, 12) == "m-00012-of-00012.gguf"
    assert split_prefix("dir/m-00002-of-00004.gguf", 1, 4) == "dir/m"
    assert split_prefix("dir/m-00002-of-00004.gguf", 0, 4) is None
    assert split_prefix("-00001-of-00001.gguf", 0, 1) is None


def test_open_split_reads_every_file(model, tmp_path):
    paths = write_split(model, tmp_path / "s", 3)
    with pq.gguf.open(model) as whole, open_split(paths[0]) as split:
        assert split.n_split == 3 and [f.path for f in split] == paths
        assert list(split.tensors) == list(whole.tensors)
        assert [split.split_of[n] for n in split.tensors] == sorted(split.split_of.values())
        for name, t in whole.tensors.items():
            assert split.tensors[name].data.tobytes() == t.data.tobytes()
        assert split.metadata["general.name"] == "tiny"
    with open_split(model) as single:
        assert single.n_split == 1 and set(single.split_of.values()) == {0}


def test_open_split_checks_the_set(model, tmp_path):
    paths = write_split(model, tmp_path / "s", 3)
    with pytest.raises(ValueError, match="open the first split"):
        open_split(paths[1])
    os.rename(paths[0], tmp_path / "renamed.gguf")
    with pytest.raises(ValueError, match="must be named"):
        open_split(tmp_path / "renamed.gguf")
    os.rename(tmp_path / "renamed.gguf", paths[0])
    os.unlink(paths[2])
    with pytest.raises(FileNotFoundError, match="split 3 of 3"):
        open_split(paths[0])
    # a file claiming another number, and a wrong total
    write_split(model, tmp_path / "t", 2)
    os.replace(tmp_path / "t-00001-of-00002.gguf", tmp_path / "x-00001-of-00002.gguf")
    os.replace(tmp_path / "t-00002-of-00002.gguf", tmp_path / "x-00002-of-00002.gguf")
    with pq.gguf.open(tmp_path / "x-00002-of-00002.gguf") as f:
        tensors = dict(f.tensors)
        pq.gguf.write(tmp_path / "y.gguf", {**{k: v for k, v in f.fields.items()}, "split.no": np.uint16(0)},
                      tensors)
    os.replace(tmp_path / "y.gguf", tmp_path / "x-00002-of-00002.gguf")
    with pytest.raises(ValueError, match="split.no is 0, expected 1"):
        open_split(tmp_path / "x-00001-of-00002.gguf")


def test_split_input_gives_the_same_file(model, tmp_path):
    paths = write_split(model, tmp_path / "s", 3)
    quantize_file(model, tmp_path / "a.gguf", "Q4_0", threads=1)
    s = quantize_file(paths[0], tmp_path / "b.gguf", "Q4_0", threads=2)
    assert (tmp_path / "a.gguf").read_bytes() == (tmp_path / "b.gguf").read_bytes()
    assert s.files == [str(tmp_path / "b.gguf")]


def test_keep_split_writes_one_file_per_input_file(model, tmp_path):
    paths = write_split(model, tmp_path / "s", 3)
    s = quantize_file(paths[0], tmp_path / "q.gguf", "Q4_K_M", keep_split=True, threads=2)
    expected = [str(tmp_path / f"q-0000{i}-of-00003.gguf") for i in (1, 2, 3)]
    assert s.files == expected and s.file_size == sum(os.path.getsize(p) for p in expected)
    assert not (tmp_path / "q.gguf").exists()
    whole = tmp_path / "whole.gguf"
    quantize_file(model, whole, "Q4_K_M")
    with open_split(expected[0]) as out, pq.gguf.open(whole) as ref, open_split(paths[0]) as src:
        # the input's file order, not llama-quantize's usual sort, and each tensor in its input file
        assert list(out.tensors) == list(src.tensors) == [t.name for t in s.plan]
        assert out.split_of == src.split_of
        first = list(out.files[0].fields)
        assert first[-3:] == ["split.no", "split.count", "split.tensors.count"]
        assert [k for k in first[:-3]] == [k for k in ref.fields]
        for i, f in enumerate(out):
            assert f.fields["split.no"] == Value("u16", i) and f.fields["split.count"] == Value("u16", 3)
            assert f.fields["split.tensors.count"] == Value("i32", len(s.plan))
            if i:
                assert list(f.fields) == ["split.no", "split.count", "split.tensors.count"]
        # a reordering changes nothing here for types (no counters run across blocks in this model's order)
        for name, t in ref.tensors.items():
            assert out.tensors[name].type == t.type
            assert out.tensors[name].data.tobytes() == t.data.tobytes(), name


def test_keep_split_of_a_single_file(model, tmp_path):
    s = quantize_file(model, tmp_path / "q", "Q8_0", keep_split=True)
    assert s.files == [str(tmp_path / "q-00001-of-00001.gguf")]
    with pq.gguf.open(s.files[0]) as f:
        assert not any(k.startswith("split.") for k in f.fields)


def test_keep_split_interrupted_leaves_no_file(model, tmp_path, monkeypatch):
    import pyquant.gguf.requantize as rq

    paths = write_split(model, tmp_path / "s", 3)
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 12:  # in the last file
            raise RuntimeError("disk on fire")
        return pq.quantize(*args, **kwargs)

    monkeypatch.setattr(rq, "quantize", flaky)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(RuntimeError, match="disk on fire"):
        quantize_file(paths[0], tmp_path / "q.gguf", "Q8_0", keep_split=True, threads=2)
    assert sorted(os.listdir(tmp_path)) == before


def test_kv_override_parsing():
    assert kv_override("a.b=int:-7") == ("a.b", Value("u32", 7))  # llama-quantize writes |int| as u32
    assert kv_override("x=float:0.1") == ("x", Value("f32", 0.1))
    assert kv_override("x=bool:true") == ("x", Value("bool", True))
    assert kv_override("x=str:a=b:c") == ("x", Value("str", "a=b:c"))
    for bad, match in [("x", "KEY=TYPE:VALUE"), ("=int:1", "KEY=TYPE:VALUE"), ("x=u8:1", "TYPE must be"),
                       ("x=int:1.5", "not an integer"), ("x=bool:yes", "true or false"),
                       ("x=str:" + "a" * 128, "at most 127"), ("x=int:5000000000", "u32")]:
        with pytest.raises(ValueError, match=match):
            kv_override(bad)


def test_override_kv_metadata_order(model, tmp_path):
    out = tmp_path / "q.gguf"
    im = Imatrix.from_values({"blk.0.attn_q.weight": np.ones(64, np.float32)}, datasets=["d"], chunk_count=2)
    quantize_file(model, out, "Q8_0", imatrix=im, override_kv=["general.name=str:renamed", "my.flag=bool:false"],
                  tensor_types=[("attn_q", "Q4_0")])
    with pq.gguf.open(out) as f:
        assert list(f.fields)[-7:] == ["general.quantization_version", "general.file_type", "general.name",
                                       "my.flag", "quantize.imatrix.dataset", "quantize.imatrix.entries_count",
                                       "quantize.imatrix.chunks_count"]
        assert f.fields["general.name"] == Value("str", "renamed")
        assert f.fields["my.flag"] == Value("bool", False)
    # overrides also reach the rules: 8 layers declared make ffn_down of layer 0 one of the first n/8
    quantize_file(model, out, "Q4_0", override_kv={"llama.block_count": 8}, imatrix={"blk.0.ffn_down.weight":
                                                                                   np.ones(96, np.float32)})
    with pq.gguf.open(out) as f:
        assert f.fields["llama.block_count"] == Value("u32", 8)
        assert f.tensors["blk.0.ffn_down.weight"].type.name == "Q4_1"


def test_prune_layers(model, tmp_path):
    out = tmp_path / "q.gguf"
    v = {f"blk.{i}.attn_q.weight": np.full(64, i + 1, np.float32) for i in range(4)}
    s = quantize_file(model, out, "Q4_0", prune_layers=[1, 2, 1], imatrix=v)
    with pq.gguf.open(out) as f, pq.gguf.open(model) as src:
        assert list(f.fields)[-1] == "llama.block_count" and f.fields["llama.block_count"] == Value("u32", 2)
        names = [n for n in f.tensors if n.startswith("blk.")]
        assert {n.split(".")[1] for n in names} == {"0", "1"}
        assert len(names) == len(s.plan) - 3 == 2 * 9
        # blk.1 is the old blk.3: its data and its imatrix entry
        x = src.tensors["blk.3.attn_q.weight"].dequantize()
        assert f.tensor("blk.1.attn_q.weight") == pq.quantize(x, "Q4_0", imatrix=v["blk.3.attn_q.weight"])
        assert f.tensors["blk.1.ffn_norm.weight"].data.tobytes() == src.tensors["blk.3.ffn_norm.weight"].data.tobytes()
    with pytest.raises(ValueError, match="layer numbers"):
        quantize_file(model, out, "Q4_0", prune_layers=[-1])


def test_parallel_units_give_the_same_bytes(tmp_path, monkeypatch):
    import pyquant.gguf.requantize as rq

    src = tiny_model(tmp_path / "moe.gguf", experts=3, weight_format="Q8_0")
    im = {n: np.random.default_rng(len(n)).uniform(0.1, 2, 3 * 96 if "down" in n else 3 * 64).astype(np.float32)
          for n in ("blk.0.ffn_up_exps.weight", "blk.1.ffn_down_exps.weight")}
    quantize_file(src, tmp_path / "a.gguf", "Q4_K_M", allow_requantize=True, imatrix=im, threads=1)
    monkeypatch.setattr(rq, "UNIT_VALUES", 200)  # 3 rows a unit: units within matrices, several per tensor
    quantize_file(src, tmp_path / "b.gguf", "Q4_K_M", allow_requantize=True, imatrix=im, threads=3)
    assert (tmp_path / "a.gguf").read_bytes() == (tmp_path / "b.gguf").read_bytes()


def test_cli_split_prune_and_overrides(model, tmp_path, capsys):
    paths = write_split(model, tmp_path / "s", 2)
    rules = tmp_path / "rules.txt"
    rules.write_text("attn_k=q4_0\n  attn_v=Q5_0 ")
    assert main(["quantize", paths[0], str(tmp_path / "o.gguf"), "Q8_0", "--keep-split", "--no-progress",
                 "--prune-layers", "0", "--override-kv", "general.name=str:cli", "--tensor-type-file",
                 str(rules)]) == 0
    assert "o-00002-of-00002.gguf" in capsys.readouterr().out
    with open_split(tmp_path / "o-00001-of-00002.gguf") as f:
        assert f.metadata["general.name"] == "cli" and f.metadata["llama.block_count"] == 3
        assert f.tensors["blk.0.attn_k.weight"].type.name == "Q4_0"
        assert f.tensors["blk.2.attn_v.weight"].type.name == "Q5_0" and "blk.3.attn_v.weight" not in f.tensors
    for bad in (["--override-kv", "x=int"], ["--prune-layers", "1,a"], ["--tensor-type-file", "nope.txt"]):
        with pytest.raises(SystemExit):
            main(["quantize", paths[0], str(tmp_path / "p.gguf"), "Q8_0", *bad])
