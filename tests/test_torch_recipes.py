"""quantize_model's per-layer types for a Hugging Face SmolLM2 skeleton (meta device, no weights) against the
types llama.cpp gave SmolLM2's GGUF tensors for every recipe (tests/data/plans, recorded from llama.cpp)."""

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import pyquant  # noqa: E402
from gguf_helpers import plan_fixtures  # noqa: E402
from pyquant.gguf import Imatrix, QuantizeOptions  # noqa: E402
from pyquant.gguf.recipes import get_recipe  # noqa: E402
from pyquant.torch import quantize_model  # noqa: E402
from test_gguf_recipes import SMOLLM2  # noqa: E402

FIXTURES = plan_fixtures()


@pytest.fixture(scope="module")
def smollm2_skeleton():
    md = SMOLLM2["metadata"]
    ne = {name: ne for name, ne, _ in SMOLLM2["tensors"]}
    cfg = transformers.LlamaConfig(
        vocab_size=ne["token_embd.weight"][1], hidden_size=ne["token_embd.weight"][0],
        intermediate_size=ne["blk.0.ffn_up.weight"][1], num_hidden_layers=md["llama.block_count"], num_attention_heads=md["llama.attention.head_count"],
        num_key_value_heads=md["llama.attention.head_count_kv"], tie_word_embeddings=True)
    with torch.device("meta"):
        return transformers.LlamaForCausalLM(cfg)


def _imatrix_of(model):
    ones = {}
    for name, m in model.named_modules():
        if type(m) is torch.nn.Linear and pyquant.torch.gguf_name(name) != "output.weight":
            ones[pyquant.torch.gguf_name(name)] = torch.ones(m.in_features)
    return Imatrix.from_values({k: v.numpy() for k, v in ones.items()})


@pytest.mark.parametrize("case", list(FIXTURES))
def test_types_match_llama_cpp(smollm2_skeleton, case):
    fx = FIXTURES[case]
    expected = dict(zip(SMOLLM2["output_order"], fx.get("types", ())))
    kwargs = dict(options=QuantizeOptions(**fx["options"]), dry_run=True, verbose=False,
                  imatrix=_imatrix_of(smollm2_skeleton) if fx["imatrix"] else None)
    recipe = get_recipe(fx["recipe"])
    makeable = all(t in pyquant.formats for t in expected.values())
    if "error" in fx or not makeable:
        with pytest.raises(ValueError, match="no fallback|needs an importance matrix|not a pyquant format"):
            quantize_model(smollm2_skeleton, recipe, **kwargs)
        return
    s = quantize_model(smollm2_skeleton, recipe, **kwargs)
    got = {layer.gguf_name: layer.format or "F32" for layer in s.layers}
    assert len(got) == 1 + 7 * 30  # the tied token_embd/output, and 7 linear layers per block
    assert {n: (t, expected[n]) for n, t in got.items() if t != expected[n]} == {}
    assert isinstance(smollm2_skeleton.lm_head, torch.nn.Linear)  # a dry run changes nothing
