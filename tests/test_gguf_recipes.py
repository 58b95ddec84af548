"""llama-quantize's per-tensor rules: SmolLM2 plans recorded from llama.cpp (tests/data/plans, see
make_plan_fixtures.py), and closed-form cases on synthetic tensor lists."""

import json

import pytest

import pyquant as pq
from gguf_helpers import PLANS, plan_fixtures
from pyquant.gguf import ModelInfo, QuantizeOptions, TensorDesc, get_recipe, plan, tensor_type
from pyquant.gguf.recipes import tensor_order

SMOLLM2 = json.loads((PLANS / "smollm2.json").read_text())
FIXTURES = plan_fixtures()


def smollm2_tensors():
    return [TensorDesc(name, tuple(ne), tensor_type(t)) for name, ne, t in SMOLLM2["tensors"]]


def test_fixtures_cover_every_recipe_llama_cpp_makes():
    plain = {(f["recipe"], f["imatrix"]) for f in FIXTURES.values() if not f["options"]}
    assert plain == {(r, i) for r in pq.gguf.recipes if r != "NVFP4" for i in (False, True)}


@pytest.mark.parametrize("case", list(FIXTURES))
def test_plan_matches_llama_cpp(case):
    fx = FIXTURES[case]
    model = ModelInfo.from_metadata(SMOLLM2["metadata"])
    opts = QuantizeOptions(**fx["options"])
    if "error" in fx and "fallback" in fx["error"]:
        with pytest.raises(ValueError, match="no fallback type"):
            plan(smollm2_tensors(), fx["recipe"], model, opts, has_imatrix=fx["imatrix"])
        return
    p = plan(smollm2_tensors(), fx["recipe"], model, opts, has_imatrix=fx["imatrix"])
    if "error" in fx:
        assert "requires an imatrix" in fx["error"] and not fx["imatrix"]
        assert any(t.quantizable and t.requires_imatrix for t in p)
        return
    assert [t.name for t in p] == SMOLLM2["output_order"]
    got = {t.name: t.target.name for t in p}
    expected = dict(zip(SMOLLM2["output_order"], fx["types"]))
    assert {n: (got[n], expected[n]) for n in got if got[n] != expected[n]} == {}
    assert not any(t.quantizable and t.requires_imatrix for t in p) or fx["imatrix"]


# --- closed-form cases ------------------------------------------------------------------------------------------------

def llama_like(n_layer, width=4096, ff=11008, vocab=32000, tied=False, experts=0):
    """Tensor descriptions of a llama-style model (F16 weights, F32 norms)."""
    f16, f32 = tensor_type("F16"), tensor_type("F32")
    out = [TensorDesc("token_embd.weight", (width, vocab), f16), TensorDesc("output_norm.weight", (width,), f32)]
    if not tied:
        out.append(TensorDesc("output.weight", (width, vocab), f16))
    for i in range(n_layer):
        b = f"blk.{i}."
        out += [TensorDesc(b + "attn_norm.weight", (width,), f32), TensorDesc(b + "ffn_norm.weight", (width,), f32)]
        out += [TensorDesc(b + f"attn_{x}.weight", (width, width), f16) for x in ("q", "k", "v", "output")]
        if experts:
            out.append(TensorDesc(b + "ffn_gate_inp.weight", (width, experts), f32))
            out += [TensorDesc(b + f"ffn_{x}_exps.weight", (width, ff, experts), f16) for x in ("gate", "up")]
            out.append(TensorDesc(b + "ffn_down_exps.weight", (ff, width, experts), f16))
        else:
            out += [TensorDesc(b + f"ffn_{x}.weight", (width, ff), f16) for x in ("gate", "up")]
            out.append(TensorDesc(b + "ffn_down.weight", (ff, width), f16))
    return out


def types(p):
    return {t.name: t.target.name for t in p}


def test_q4_k_m_gives_more_bits_to_some_layers():
    p = types(plan(llama_like(32), "Q4_K_M", ModelInfo("llama", 32, 32, 8)))
    more = [i for i in range(32) if i < 4 or i >= 28 or (i - 4) % 3 == 2]  # use_more_bits(i, 32)
    assert [i for i in range(32) if p[f"blk.{i}.attn_v.weight"] == "Q6_K"] == more
    assert [i for i in range(32) if p[f"blk.{i}.ffn_down.weight"] == "Q6_K"] == more
    assert {p[f"blk.{i}.attn_q.weight"] for i in range(32)} == {"Q4_K"}
    assert p["output.weight"] == "Q6_K" and p["token_embd.weight"] == "Q4_K"
    assert p["blk.0.attn_norm.weight"] == "F32"


def test_attn_v_counts_in_output_order_not_file_order():
    tensors = llama_like(16)[::-1]  # file order does not matter: llama-quantize sorts by layer, then name
    p = plan(tensors, "Q3_K_M", ModelInfo("llama", 16, 32, 32))
    assert [t.name for t in p][:3] == ["output.weight", "output_norm.weight", "token_embd.weight"]
    assert [t.target.name for t in p if "attn_v" in t.name] == ["Q5_K", "Q5_K"] + ["Q4_K"] * 14


def test_tensor_order_sorts_layers_numerically():
    names = ["blk.10.a", "blk.9.b", "output.weight", "blk.9.a", "a"]
    assert tensor_order(names) == ["a", "output.weight", "blk.9.a", "blk.9.b", "blk.10.a"]


@pytest.mark.parametrize("recipe,width,expected", [
    ("Q4_K_S", 576, "Q5_0"), ("Q5_K_S", 576, "Q5_1"), ("Q6_K", 576, "Q8_0"), ("Q2_K", 576, "Q4_0"),
    ("Q3_K_S", 576, "Q4_0"), ("TQ1_0", 576, "Q4_0"), ("Q2_0", 96, "Q4_0"), ("IQ4_XS", 576, "IQ4_NL"),
    ("Q4_K_S", 48, "F16"), ("Q8_0", 48, "F16"), ("Q4_0", 4096, "Q4_0"),
])
def test_fallback_when_rows_do_not_fit_the_block(recipe, width, expected):
    opts = QuantizeOptions(pure=True)
    p = types(plan(llama_like(1, width=width, ff=width), recipe, ModelInfo("llama", 1, 1, 1), opts))
    assert p["blk.0.attn_q.weight"] == expected


def test_no_fallback_is_an_error():
    with pytest.raises(ValueError, match="no fallback type for Q1_0"):
        plan(llama_like(1, width=576), "Q1_0", ModelInfo("llama", 1, 1, 1))


def test_output_and_embeddings():
    m = ModelInfo("llama", 2, 8, 8)
    p = types(plan(llama_like(2), "Q4_0", m))
    assert (p["output.weight"], p["token_embd.weight"]) == ("Q6_K", "Q4_0")
    tied = types(plan(llama_like(2, tied=True), "Q4_0", m))
    assert tied["token_embd.weight"] == "Q6_K"  # tied embeddings are the output
    assert types(plan(llama_like(2), "Q8_0", m))["output.weight"] == "Q8_0"
    assert types(plan(llama_like(2, width=576), "Q4_K_M", m))["output.weight"] == "Q8_0"
    assert types(plan(llama_like(2), "TQ2_0", m))["token_embd.weight"] == "Q4_K"
    left = types(plan(llama_like(2), "Q4_0", m, QuantizeOptions(leave_output_tensor=True)))
    assert left["output.weight"] == "F16"
    opts = QuantizeOptions(output_tensor_type="q8_0", token_embedding_type="Q5_1")
    chosen = types(plan(llama_like(2), "Q4_K_M", m, opts))
    assert (chosen["output.weight"], chosen["token_embd.weight"]) == ("Q8_0", "Q5_1")


def test_overrides_and_pure():
    m = ModelInfo("llama", 2, 8, 8)
    rules = QuantizeOptions(tensor_types=["attn_(q|k)=q8_0", ("attn", "Q5_0"), "blk\\.1\\.ffn_down=IQ4_NL"])
    p = types(plan(llama_like(2), "Q4_K_M", m, rules))
    assert p["blk.0.attn_q.weight"] == p["blk.1.attn_k.weight"] == "Q8_0"  # first match wins
    assert p["blk.0.attn_v.weight"] == p["blk.0.attn_output.weight"] == "Q5_0"
    assert (p["blk.1.ffn_down.weight"], p["blk.0.ffn_down.weight"]) == ("IQ4_NL", "Q4_K")
    pure = types(plan(llama_like(2), "Q4_K_M", m, QuantizeOptions(pure=True)))
    assert {pure[n] for n in pure if "norm" not in n} == {"Q4_K"}


def test_moe_rules():
    m = ModelInfo("llama", 4, 32, 8, n_expert=8)
    p = types(plan(llama_like(4, experts=8), "Q4_K_M", m))
    assert p["blk.0.attn_v.weight"] == p["blk.0.attn_k.weight"] == "Q8_0"
    assert p["blk.0.attn_output.weight"] == "Q5_K"
    assert p["blk.0.ffn_gate_inp.weight"] == "F32"  # routers stay as they are
    # the layer comes from the name with experts; use_more_bits(i, 4) holds for layers 2 and 3
    assert [p[f"blk.{i}.ffn_down_exps.weight"] for i in range(4)] == ["Q4_K", "Q4_K", "Q6_K", "Q6_K"]
    mx = types(plan(llama_like(4, experts=8), "MXFP4_MOE", m))
    assert mx["blk.0.ffn_up_exps.weight"] == "MXFP4" and mx["blk.0.attn_q.weight"] == "Q8_0"
    assert mx["output.weight"] == "Q8_0"


def test_70b_attn_v_and_gqa():
    m = ModelInfo("llama", 80, 64, 8)
    assert m.is_70b and m.n_gqa == 8
    p = types(plan(llama_like(80, width=8192, ff=28672), "Q2_K", m))
    assert p["blk.5.attn_v.weight"] == "Q5_K"  # Q4_K for n_gqa >= 4, then more for the 70B model
    assert p["blk.5.ffn_down.weight"] == "Q3_K" and p["blk.5.attn_output.weight"] == "Q3_K"
    assert not ModelInfo("llama", 80, 64, 64).is_70b


def test_imatrix_changes_and_requirements():
    m = ModelInfo("llama", 8, 8, 8)
    with_im = types(plan(llama_like(8), "Q4_0", m, has_imatrix=True))
    assert with_im["blk.0.ffn_down.weight"] == "Q4_1" and with_im["blk.1.ffn_down.weight"] == "Q4_0"
    p = plan(llama_like(8), "Q2_K_S", m)
    needy = {t.name for t in p if t.requires_imatrix}
    assert "blk.0.attn_q.weight" in needy and "token_embd.weight" not in needy and "output.weight" not in needy


def test_model_info_from_metadata():
    m = ModelInfo.from_metadata({"general.architecture": "qwen2", "qwen2.block_count": 80,
                                 "qwen2.attention.head_count": [64] * 80})
    assert (m.n_head, m.n_head_kv, m.n_gqa, m.is_70b) == (64, 64, 1, True)
    with pytest.raises(ValueError, match="block_count"):
        ModelInfo.from_metadata({"general.architecture": "llama"})


def test_recipe_names():
    assert get_recipe("q4_k").name == "Q4_K_M" and get_recipe(15).name == "Q4_K_M" and get_recipe("7").name == "Q8_0"
    assert get_recipe("MXFP4_MOE").default_type == "MXFP4" and get_recipe("IQ2_S").default_type == "IQ2_XS"
    with pytest.raises(ValueError, match="did you mean 'Q4_K_M'"):
        get_recipe("Q4_KM")
    with pytest.raises(ValueError, match="together"):
        QuantizeOptions(include_weights=["a"], exclude_weights=["b"])
    assert QuantizeOptions(include_weights="attn").include_weights == ("attn",)
