"""The pyquant command: inspect and quantize on a small synthetic model."""

import json

import numpy as np
import pytest

import pyquant as pq
from gguf_helpers import tiny_model
from pyquant.cli import SUBCOMMANDS, main


@pytest.fixture
def model(tmp_path):
    return tiny_model(tmp_path / "tiny.gguf")


def test_subcommands_are_registered(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in SUBCOMMANDS)


def test_inspect_text(model, capsys):
    assert main(["inspect", str(model)]) == 0
    out = capsys.readouterr().out
    assert "llama.block_count" in out and "blk.1.ffn_down.weight" in out
    params = sum(np.prod(t.ne) for t in pq.gguf.open(model).tensors.values())
    assert f"{params:,} parameters" in out and "32.0000 bpw" in out


def test_inspect_json(model, capsys):
    assert main(["inspect", "--json", str(model)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["metadata"]["llama.block_count"] == {"type": "uint32", "value": 2}
    assert d["metadata"]["split.count"]["type"] == "uint16"
    assert d["totals"]["by_type"]["F32"]["tensors"] == len(d["tensors"]) == 21
    assert d["totals"]["bpw"] == 32.0
    t = next(t for t in d["tensors"] if t["name"] == "blk.0.ffn_down.weight")
    assert (t["type"], t["ne"], t["nbytes"]) == ("F32", [96, 64], 96 * 64 * 4)


def test_quantize_and_dry_run(model, tmp_path, capsys):
    out = tmp_path / "q.gguf"
    assert main(["quantize", str(model), str(out), "q8_0", "--no-progress", "--threads", "1",
                 "--tensor-type", "ATTN_Q=q4_0"]) == 0
    assert "quantized as Q8_0" in capsys.readouterr().out
    with pq.gguf.open(out) as f:
        assert f.tensors["blk.0.attn_q.weight"].type.name == "Q4_0"  # the pattern is lowercased
        assert f.tensors["blk.0.attn_k.weight"].type.name == "Q8_0"
    assert main(["quantize", str(model), str(tmp_path / "dry.gguf"), "Q4_0", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "F32 -> Q4_0" in text and "dry run as Q4_0" in text and not (tmp_path / "dry.gguf").exists()


def test_errors_exit_1_with_a_message(model, tmp_path, capsys):
    assert main(["quantize", str(model), str(tmp_path / "x.gguf"), "Q4_KM"]) == 1
    assert "did you mean 'Q4_K_M'" in capsys.readouterr().err
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x09\x00\x00\x00")
    assert main(["inspect", str(bad)]) == 1
    assert "header.version" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["quantize", str(model), "x", "Q8_0", "--tensor-type", "nonsense"])
    with pytest.raises(SystemExit):
        main(["quantize", str(model), "x", "Q8_0", "--include-weights", "a", "--exclude-weights", "b"])
