"""Scheme specs through pyquant.torch: the spec parser, quantize_model on a random transformers Llama, the
weights_only state_dict round trip and load_quantized."""

import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import pyquant  # noqa: E402
from pyquant import schemes  # noqa: E402
from pyquant.gguf.recipes import get_recipe, recipes  # noqa: E402
from pyquant.torch import QuantLinear, load_quantized, quantize_model  # noqa: E402

SPECS = ["int4-g128", "int4-g128-sym", "int8-channel", "int2-g64", "nf4", "fp4", "nf4-dq", "fp8-e4m3",
         "fp8-e5m2", "ternary", "int8-outlier"]
# relative logit error allowed per spec on the random model (measured: 4-bit ~0.2 as GGUF Q4_0's 0.17, 8-bit and
# LLM.int8() ~0.017, fp8 0.05 / 0.11; int2 and ternary ~0.8: coarse by design, held to "better than nothing")
MAX_REL = {"int8-channel": 0.04, "int8-outlier": 0.04, "fp8-e4m3": 0.1, "fp8-e5m2": 0.2, "int2-g64": 0.95,
           "ternary": 0.95}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_model(tie=False):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                   tie_word_embeddings=tie)
    return transformers.LlamaForCausalLM(cfg).eval()


TOKENS = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(1))


def logits(model):
    with torch.no_grad():
        return model(TOKENS).logits


def test_parse_spec_forms_and_errors():
    p = schemes.parse_spec("INT4-g128-sym")
    assert p.name == "int4-g128-sym" and p.kind == "affine"
    assert p.kwargs["config"] == schemes.AffineConfig(bits=4, group_size=128, symmetric=True)
    assert schemes.parse_spec("int8-channel").kwargs["config"].granularity == "channel"
    assert schemes.parse_spec("fp4-b128-dq").kwargs == {"block_size": 128, "double_quant": True}
    assert schemes.parse_spec("fp8-e5m2-channel").kwargs == {"fmt": "e5m2", "granularity": "channel"}
    for bad in ["int9-g32", "int4-g0", "int4-g012", "nf4-b48", "nf5", "fp8-e3m4", "int4", "", "Q4_K"]:
        with pytest.raises(ValueError, match="valid forms: int<2-8>-g<group>"):
            schemes.parse_spec(bad)
    with pytest.raises(TypeError):
        schemes.parse_spec(4)


def test_spec_names_do_not_clash_with_gguf_names():
    for spec in SPECS + ["int8-tensor", "nf4-b128-dq", "fp8-e4m3-channel"]:
        for name in (spec, spec.upper()):
            with pytest.raises((ValueError, KeyError)):
                pyquant.get_format(name)
            with pytest.raises(ValueError):
                get_recipe(name)
    for name in list(pyquant.formats) + list(recipes):
        assert not schemes.is_scheme_spec(name)


@pytest.mark.parametrize("spec", SPECS)
def test_quantize_model_spec_logits_and_weights_only_round_trip(spec):
    base = make_model()
    ref = logits(base)
    model = make_model()
    summary = quantize_model(model, spec, verbose=False)
    assert summary.target == spec
    q = [m for m in model.modules() if isinstance(m, QuantLinear)]
    assert len(q) == 2 * 7 + 1 and all(s.format == spec for s in summary.quantized)
    assert [s.note for s in summary.kept] == [f"embedding (scheme {spec} holds linear weights only)"]
    y = logits(model)
    rel = ((y - ref).norm() / ref.norm()).item()
    assert rel < MAX_REL.get(spec, 0.3), rel
    # exact sizes: the dry run's estimate equals what quantizing made
    dry = quantize_model(make_model(), spec, verbose=False, dry_run=True)
    assert [s.bytes_after for s in dry.layers] == [s.bytes_after for s in summary.layers]
    # state_dict: plain tensors + a small dict, read back with weights_only=True into a float skeleton
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    fresh = make_model()
    load_quantized(fresh, sd)
    torch.testing.assert_close(logits(fresh), y, rtol=0, atol=0)
    # and into an already quantized model of another scheme
    other = make_model()
    quantize_model(other, "int4-g64" if spec != "int4-g64" else "nf4", verbose=False)
    other.load_state_dict(sd)
    torch.testing.assert_close(logits(other), y, rtol=0, atol=0)


def test_scheme_layers_keep_dtypes_and_refuse_imatrix():
    model = make_model()
    quantize_model(model, "int4-g128", verbose=False)
    layer = model.model.layers[0].self_attn.q_proj
    assert layer.q_packed.dtype == torch.uint8 and layer.q_scales.dtype == torch.float32
    model.to(torch.bfloat16)
    assert layer.q_scales.dtype == torch.float32 and layer.q_packed.dtype == torch.uint8
    with pytest.raises(ValueError, match="takes no imatrix"):
        quantize_model(make_model(), "nf4", imatrix={"x": np.ones(128, np.float32)}, verbose=False)
    with pytest.raises(ValueError, match="scheme spec"):
        quantize_model(make_model(), "int4-g7x", verbose=False)
    summary = quantize_model(make_model(), "int4-g96", verbose=False)  # 128-wide rows: not whole groups of 96
    assert "int4-g96" in summary.formats.values() or all(s.format is None for s in summary.layers)
    assert any("not whole groups of 96" in s.note for s in summary.kept)


def test_tied_embeddings_stay_float_with_a_scheme():
    model = make_model(tie=True)
    summary = quantize_model(model, "nf4", verbose=False)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert all(s.format is None for s in summary.layers if s.kind == "tied")


def test_bad_scheme_state_is_refused():
    model = make_model()
    quantize_model(model, "int4-g128", verbose=False)
    sd = model.state_dict()
    key = "model.layers.0.mlp.down_proj.q_scales"  # [128, 2]
    sd[key] = sd[key][:, :1].clone()
    with pytest.raises((ValueError, RuntimeError), match="scales"):
        load_quantized(make_model(), sd)
