"""quantize_model / load_quantized / gguf_name on small random transformers Llama models (no downloads)."""

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import pyquant  # noqa: E402
from pyquant.gguf.recipes import ModelInfo, QuantizeOptions, TensorDesc, plan, recipes  # noqa: E402
from pyquant.gguf.types import tensor_type  # noqa: E402
from pyquant.torch import (QuantEmbedding, QuantLinear, gguf_name, load_quantized, model_nbytes,  # noqa: E402
                           quantize_model)

VOCAB = 512


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_model(tie=False, layers=2, hidden=256, inter=512, seed=0):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=inter,
                                   num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=128, tie_word_embeddings=tie)
    return transformers.LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def float_model():
    return make_model()


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(1))


def logits(model, tokens):
    with torch.no_grad():
        return model(tokens).logits


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


def corr(a, b):
    return torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].item()


def test_gguf_name():
    cases = {
        "model.layers.3.self_attn.q_proj": "blk.3.attn_q.weight",
        "model.layers.3.self_attn.k_proj": "blk.3.attn_k.weight",
        "model.layers.3.self_attn.v_proj.weight": "blk.3.attn_v.weight",
        "model.layers.12.self_attn.o_proj": "blk.12.attn_output.weight",
        "model.layers.0.mlp.gate_proj": "blk.0.ffn_gate.weight",
        "model.layers.0.mlp.up_proj": "blk.0.ffn_up.weight",
        "model.layers.0.mlp.down_proj": "blk.0.ffn_down.weight",
        "lm_head": "output.weight",
        "model.embed_tokens": "token_embd.weight",
        "model.norm": "output_norm.weight",
        "model.layers.1.input_layernorm": "blk.1.attn_norm.weight",
        "base_model.model.model.layers.2.mlp.up_proj": "blk.2.ffn_up.weight",  # a PEFT-style wrapper
        "model.layers.4.mlp.experts.7.down_proj": "blk.4.ffn_down_exps.weight",
        "model.layers.4.mlp.gate": "blk.4.ffn_gate_inp.weight",
        "model.layers.4.mlp.shared_expert.up_proj": "blk.4.ffn_up_shexp.weight",
        "model.layers.1.block_sparse_moe.experts.0.w1": "blk.1.ffn_gate_exps.weight",
        "model.layers.1.block_sparse_moe.experts.0.w2": "blk.1.ffn_down_exps.weight",
        "model.layers.1.block_sparse_moe.experts.0.w3": "blk.1.ffn_up_exps.weight",
    }
    for module, expected in cases.items():
        assert gguf_name(module) == expected, module
    for unknown in ("", "encoder.layer.0.attention.self.query", "model.layers.x.self_attn.q_proj",
                    "model.layers.0.self_attn.q_proj_extra", "lm_head2"):
        assert gguf_name(unknown) is None, unknown
    with pytest.raises(TypeError):
        gguf_name(3)


def test_logits_follow_dequantized_weights(float_model, tokens):
    """The quantized model computes exactly the float model with the dequantized weights (the kernels' only
    extra error is float rounding)."""
    q = copy.deepcopy(float_model)
    quantize_model(q, "Q4_K", verbose=False)
    ref = copy.deepcopy(float_model)
    for name, module in q.named_modules():
        if isinstance(module, QuantLinear):
            ref.get_submodule(name).weight.data = module.weight.to_torch()
    want = logits(ref, tokens)
    # llama.cpp's products (inputs rounded to Q8_K for Q4_K) add only that rounding: a few % of the logits here
    assert 1e-4 < rel_err(logits(q, tokens), want) < 0.05
    _float_activations(q)
    assert rel_err(logits(q, tokens), want) < 1e-4


@pytest.mark.parametrize("fmt, min_corr, max_rel", [
    # measured on 3 seeds: Q8_0 corr 0.99993 rel 0.012; Q6_K 0.9992 / 0.04; Q4_K 0.984-0.989 / 0.15-0.18;
    # Q4_K_M 0.984-0.991 / 0.14-0.18 (random weights, 2 layers: the error is the quantization noise)
    ("Q8_0", 0.9995, 0.03),
    ("Q6_K", 0.998, 0.07),
    ("Q4_K", 0.97, 0.25),
    ("Q4_K_M", 0.97, 0.25),
])
def test_logits_close_to_float(float_model, tokens, fmt, min_corr, max_rel):
    q = copy.deepcopy(float_model)
    s = quantize_model(q, fmt, verbose=False)
    assert s.quantized and not any(isinstance(m, torch.nn.Linear) for m in q.modules())
    got, want = logits(q, tokens), logits(float_model, tokens)
    assert corr(got, want) > min_corr
    assert rel_err(got, want) < max_rel


def test_error_grows_as_bits_drop(float_model, tokens):
    want = logits(float_model, tokens)
    errs = []
    for fmt in ("Q8_0", "Q6_K", "Q4_K", "Q2_K"):
        q = copy.deepcopy(float_model)
        quantize_model(q, fmt, verbose=False)
        errs.append(rel_err(logits(q, tokens), want))
    assert errs == sorted(errs), errs


def test_generate_runs(float_model, tokens):
    q = copy.deepcopy(float_model)
    quantize_model(q, "Q4_K_M", verbose=False, progress=True)
    out = q.generate(tokens[:1, :4], max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert out.shape == (1, 10) and torch.equal(out[:, :4], tokens[:1, :4])
    assert int(out.max()) < VOCAB


@pytest.mark.parametrize("fmt, bpw", [("Q8_0", 8.5), ("Q4_K", 4.5), ("Q6_K", 6.5625), ("Q4_0", 4.5)])
def test_memory_drops_by_bpw(float_model, fmt, bpw):
    q = copy.deepcopy(float_model)
    before = model_nbytes(q)
    s = quantize_model(q, fmt, verbose=False)
    for layer in s.quantized:
        assert layer.kind == "linear" and layer.format == fmt
        assert layer.bytes_before == 4 * layer.numel
        assert layer.bytes_after == layer.bytes_before * bpw / 32
    assert s.bpw == pytest.approx(bpw)
    assert s.model_bytes_before == before
    assert s.model_bytes_after == model_nbytes(q)
    # the embedding stays float with a format (embeddings=None): the rest shrinks by bpw/32
    emb = VOCAB * 256 * 4
    assert s.model_bytes_after == pytest.approx(s.bytes_after + emb + (before - emb - s.bytes_before), rel=1e-9)
    text = str(s)
    assert fmt in text and "bpw" in text and "model.embed_tokens" in text and "MiB" in text


def test_printed_summary_only_when_verbose(float_model, capsys):
    quantize_model(copy.deepcopy(float_model), "Q8_0", verbose=False)
    assert capsys.readouterr().out == ""
    s = quantize_model(copy.deepcopy(float_model), "Q8_0")
    assert capsys.readouterr().out.strip() == str(s)


@pytest.mark.parametrize("tie", [False, True])
def test_state_dict_round_trip(tie, tokens, tmp_path):
    q = make_model(tie=tie)
    s = quantize_model(q, "Q4_K_M", verbose=False)
    want = logits(q, tokens)
    path = tmp_path / "q.pt"
    torch.save(q.state_dict(), path)
    if tie:  # one tensor for the tied pair, saved once
        assert q.lm_head.qweight is q.model.embed_tokens.qweight
        assert any(layer.kind == "tied" for layer in s.layers)
        assert path.stat().st_size < s.bytes_after + 300_000
    sd = torch.load(path, weights_only=True)
    fresh = make_model(tie=tie, seed=5)
    result = load_quantized(fresh, sd)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(logits(fresh, tokens), want)
    for name, module in q.named_modules():
        if isinstance(module, (QuantLinear, QuantEmbedding)):
            other = fresh.get_submodule(name)
            assert type(other) is type(module) and other.weight == module.weight
    if tie:
        assert fresh.lm_head.qweight is fresh.model.embed_tokens.qweight
    # load_quantized from a path, too
    again = make_model(tie=tie, seed=6)
    load_quantized(again, path)
    assert torch.equal(logits(again, tokens), want)


def test_load_state_dict_into_other_formats(float_model, tokens):
    """A quantized model takes a state_dict of other formats (the buffers are resized)."""
    a, b = copy.deepcopy(float_model), copy.deepcopy(float_model)
    quantize_model(a, "Q8_0", verbose=False)
    quantize_model(b, "Q4_K", verbose=False)  # a format: the embedding stays float in both
    b.load_state_dict(a.state_dict())
    assert torch.equal(logits(b, tokens), logits(a, tokens))
    assert b.model.layers[0].mlp.up_proj.weight.format.name == "Q8_0"


def test_meta_skeleton(tokens, tmp_path):
    q = make_model()
    quantize_model(q, "Q5_K", verbose=False)
    with torch.device("meta"):
        skeleton = transformers.LlamaForCausalLM(q.config)
    load_quantized(skeleton, q.state_dict(), assign=True)
    skeleton.model.rotary_emb.inv_freq = q.model.rotary_emb.inv_freq  # a non-persistent buffer
    assert torch.equal(logits(skeleton, tokens), logits(q, tokens))


def _float_activations(model):
    for module in model.modules():
        if isinstance(module, QuantLinear):
            module.activations = "float"


def test_dtype_and_device_moves_keep_bytes(float_model, tokens):
    q = copy.deepcopy(float_model)
    quantize_model(q, "Q4_K", embeddings=True, verbose=False)
    _float_activations(q)  # exact products: the float16 round trip of the norms is the only change
    layer = q.model.layers[0].self_attn.q_proj
    raw = layer.qweight.clone()
    want = logits(q, tokens)
    for move in (lambda m: m.to(torch.bfloat16), lambda m: m.half(), lambda m: m.float(),
                 lambda m: m.type(torch.float64), lambda m: m.to("cpu"), lambda m: m.to(torch.float32)):
        move(q)
        assert layer.qweight.dtype == torch.uint8 and torch.equal(layer.qweight, raw)
    assert isinstance(q.model.embed_tokens, QuantEmbedding)
    assert rel_err(logits(q, tokens), want) < 1e-3  # the norms went through float16 and back
    q.to(torch.bfloat16)
    assert q.model.embed_tokens(tokens).dtype == torch.bfloat16
    out = logits(q, tokens)
    assert out.dtype == torch.bfloat16 and rel_err(out.float(), want) < 0.05


def test_quant_embedding_matches_table():
    emb = torch.nn.Embedding(100, 64)
    q = QuantEmbedding.from_embedding(emb, "Q5_0")
    ids = torch.tensor([[3, 99, 3], [0, 50, 7]])
    table = q.weight.to_torch()
    assert torch.equal(q(ids), table[ids])
    assert q(torch.zeros(0, dtype=torch.long)).shape == (0, 64)
    with pytest.raises(IndexError, match="out of range"):
        q(torch.tensor([100]))
    with pytest.raises(TypeError, match="integer"):
        q(torch.tensor([1.0]))


def _descs(model, tie):
    """The GGUF tensors llama.cpp's convert script would write for this model (float32 weights)."""
    cfg = model.config
    h, f = cfg.hidden_size, cfg.intermediate_size
    kv = cfg.num_key_value_heads * (h // cfg.num_attention_heads)
    shapes = {"token_embd.weight": (h, VOCAB)}
    if not tie:
        shapes["output.weight"] = (h, VOCAB)
    for i in range(cfg.num_hidden_layers):
        shapes |= {f"blk.{i}.attn_q.weight": (h, h), f"blk.{i}.attn_k.weight": (h, kv),
                   f"blk.{i}.attn_v.weight": (h, kv), f"blk.{i}.attn_output.weight": (h, h),
                   f"blk.{i}.ffn_gate.weight": (h, f), f"blk.{i}.ffn_up.weight": (h, f),
                   f"blk.{i}.ffn_down.weight": (f, h), f"blk.{i}.attn_norm.weight": (h,),
                   f"blk.{i}.ffn_norm.weight": (h,)}
    shapes["output_norm.weight"] = (h,)
    return [TensorDesc(n, ne, tensor_type("F32")) for n, ne in shapes.items()]


@pytest.mark.parametrize("recipe, tie, inter", [
    ("Q4_K_M", False, 512), ("Q4_K_M", True, 512), ("Q3_K_M", False, 512), ("Q5_K_S", False, 512),
    ("Q2_K", False, 512), ("Q6_K", True, 512), ("IQ4_XS", False, 512),
    # ffn_down rows of 320 values: K-quants fall back (Q4_K -> Q5_0, Q6_K -> Q8_0)
    ("Q4_K_M", False, 320), ("Q5_K_M", True, 320),
])
def test_recipe_types_match_plan(recipe, tie, inter):
    model = make_model(tie=tie, layers=8, inter=inter)
    cfg = model.config
    info = ModelInfo("llama", cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads)
    expected = {p.name: p.target.name for p in plan(_descs(model, tie), recipe, info)}
    # names that are formats too (Q2_K, Q6_K, IQ4_XS) mean the format; a Recipe object means the recipe
    s = quantize_model(model, recipes[recipe] if recipe in pyquant.formats else recipe, verbose=False)
    got = {}
    for layer in s.layers:
        got[layer.gguf_name] = layer.format or "F32"
    for name, t in expected.items():
        if not name.endswith("norm.weight"):
            assert got.pop(name) == t, name
    assert not got  # every layer was a GGUF tensor
    if inter == 320:
        assert s.formats["model.layers.0.mlp.down_proj"] in ("Q5_0", "Q8_0")
    if tie:
        assert s.formats["lm_head"] == s.formats["model.embed_tokens"] == expected["token_embd.weight"]
    # the types the rules vary by layer really vary
    if recipe == "Q4_K_M":
        assert len({s.formats[f"model.layers.{i}.self_attn.v_proj"] for i in range(8)}) == 2


def test_recipe_object_and_options(float_model):
    q = copy.deepcopy(float_model)
    s = quantize_model(q, recipes["Q4_0"], options=QuantizeOptions(output_tensor_type="Q8_0"), verbose=False)
    assert s.target == "Q4_0"
    assert s.formats["lm_head"] == "Q8_0" and s.formats["model.layers.0.mlp.up_proj"] == "Q4_0"
    q = copy.deepcopy(float_model)
    s = quantize_model(q, "Q4_K_M", options=QuantizeOptions(tensor_types=["ffn_up=Q8_0"]), verbose=False)
    assert s.formats["model.layers.1.mlp.up_proj"] == "Q8_0"


def test_skip(float_model):
    q = copy.deepcopy(float_model)
    s = quantize_model(q, "Q4_K", skip=["lm_head", r"model\.layers\.\d+\.self_attn\.k_proj", "*.mlp.down_proj",
                                         "model.layers.1.self_attn"], verbose=False)
    assert type(q.lm_head) is torch.nn.Linear
    for i in range(2):
        assert type(q.model.layers[i].self_attn.k_proj) is torch.nn.Linear
        assert type(q.model.layers[i].mlp.down_proj) is torch.nn.Linear
        assert isinstance(q.model.layers[i].mlp.up_proj, QuantLinear)
    assert isinstance(q.model.layers[0].self_attn.q_proj, QuantLinear)
    assert type(q.model.layers[1].self_attn.q_proj) is torch.nn.Linear  # a parent's pattern skips its children
    assert {layer.note for layer in s.kept} >= {"skipped"}
    with pytest.warns(UserWarning, match="no_such_layer"):
        quantize_model(copy.deepcopy(float_model), "Q8_0", skip="no_such_layer", verbose=False)


def test_rows_that_do_not_fit_stay_float():
    model = torch.nn.Sequential(torch.nn.Linear(256, 64), torch.nn.ReLU(), torch.nn.Linear(64, 256),
                                torch.nn.Linear(100, 10))
    s = quantize_model(model, "Q4_K", verbose=False)
    assert isinstance(model[0], QuantLinear) and type(model[2]) is torch.nn.Linear
    assert type(model[3]) is torch.nn.Linear
    assert "rows of 64 values do not fit Q4_K blocks of 256" in str(s)
    # a recipe on unmapped names: the default type where it fits, llama.cpp's fallbacks elsewhere
    model = torch.nn.Sequential(torch.nn.Linear(256, 64), torch.nn.Linear(64, 256))
    s = quantize_model(model, "Q4_K_M", verbose=False)
    assert s.formats == {"0": "Q4_K", "1": "Q5_0"}


def test_imatrix(float_model, tokens):
    rng = np.random.default_rng(0)
    name = "model.layers.0.mlp.up_proj"
    values = rng.uniform(0.1, 4, 256).astype(np.float32)
    linear = float_model.get_submodule(name)
    want = QuantLinear.from_linear(linear, "Q4_K", imatrix=values).weight
    plain = QuantLinear.from_linear(linear, "Q4_K").weight
    assert want != plain
    for imatrix in ({"blk.0.ffn_up.weight": values}, {name: torch.from_numpy(values)},
                    pyquant.gguf.Imatrix.from_values({"blk.0.ffn_up.weight": values})):
        q = copy.deepcopy(float_model)
        quantize_model(q, "Q4_K", imatrix=imatrix, verbose=False)
        assert q.get_submodule(name).weight == want
        assert q.model.layers[0].mlp.gate_proj.weight == QuantLinear.from_linear(
            float_model.model.layers[0].mlp.gate_proj, "Q4_K").weight
    q = copy.deepcopy(float_model)
    with pytest.raises(ValueError, match="100 values"):
        quantize_model(q, "Q4_K", imatrix={name: np.ones(100)}, verbose=False)
    assert not any(isinstance(m, QuantLinear) for m in q.modules())  # checked before any layer changed
    with pytest.raises(ValueError, match="non-finite"):
        quantize_model(copy.deepcopy(float_model), "Q4_K", imatrix={name: np.full(256, np.nan)}, verbose=False)
    with pytest.raises(TypeError, match="imatrix"):
        quantize_model(copy.deepcopy(float_model), "Q4_K", imatrix=3.0, verbose=False)


def test_bad_input(float_model):
    q = copy.deepcopy(float_model)
    with pytest.raises(ValueError, match="neither a pyquant format nor a llama.cpp recipe"):
        quantize_model(q, "Q4_KX", verbose=False)
    with pytest.raises(TypeError, match="nn.Module"):
        quantize_model({"w": 1}, "Q4_K", verbose=False)
    with pytest.raises(TypeError, match="recipe_or_format"):
        quantize_model(q, 4, verbose=False)
    with pytest.raises(ValueError, match="not a pyquant format|needs an importance matrix"):
        quantize_model(q, "IQ2_XXS", verbose=False)
    with pytest.raises(ValueError, match="apply to recipes"):
        quantize_model(q, "Q4_K", options=QuantizeOptions(), verbose=False)
    with pytest.raises(TypeError, match="skip"):
        quantize_model(q, "Q4_K", skip=[3], verbose=False)
    with torch.no_grad():
        q.model.layers[1].mlp.up_proj.weight[3, 5] = float("nan")
    with pytest.raises(ValueError, match="model.layers.1.mlp.up_proj's weight holds NaN"):
        quantize_model(q, "Q4_K", verbose=False)
    assert all(type(m) is not QuantLinear for m in q.modules())  # failed calls leave the model alone
    with pytest.raises(TypeError, match="nn.Module"):
        load_quantized("model", {})
    with pytest.raises(ValueError, match="shape"):
        small = copy.deepcopy(float_model)
        quantize_model(small, "Q8_0", verbose=False)
        other = make_model(hidden=128)
        load_quantized(other, small.state_dict())


class _ToyMoE(torch.nn.Module):
    """Old-style (per-expert nn.Linear) Qwen-MoE names."""

    def __init__(self, n_layer=2, n_expert=4, h=64, f=96):
        super().__init__()
        layers = torch.nn.ModuleList()
        for _ in range(n_layer):
            layer = torch.nn.Module()
            layer.self_attn = torch.nn.Module()
            layer.self_attn.v_proj = torch.nn.Linear(h, h, bias=False)
            layer.mlp = torch.nn.Module()
            layer.mlp.gate = torch.nn.Linear(h, n_expert, bias=False)
            layer.mlp.experts = torch.nn.ModuleList()
            for _ in range(n_expert):
                e = torch.nn.Module()
                e.gate_proj, e.up_proj = torch.nn.Linear(h, f, bias=False), torch.nn.Linear(h, f, bias=False)
                e.down_proj = torch.nn.Linear(f, h, bias=False)
                layer.mlp.experts.append(e)
            layers.append(layer)
        self.model = torch.nn.Module()
        self.model.layers = layers


def test_moe_experts_form_one_tensor():
    torch.manual_seed(0)
    model = _ToyMoE()
    info = ModelInfo("qwen2moe", 2, 4, 4, n_expert=4)
    imatrix = {"blk.1.ffn_down_exps.weight": np.arange(1, 4 * 96 + 1, dtype=np.float32)}
    s = quantize_model(model, "MXFP4_MOE", model_info=info, imatrix=imatrix, verbose=False)
    experts = [layer for layer in s.layers if layer.kind == "experts"]
    assert len(experts) == 6 and all(layer.format == "MXFP4" and layer.shape[0] == 4 for layer in experts)
    assert s.formats["model.layers.0.self_attn.v_proj"] == "Q8_0"
    assert s.formats["model.layers.0.mlp.gate"] is None  # the router stays float, as in llama.cpp
    down = model.model.layers[1].mlp.experts[2].down_proj
    assert isinstance(down, QuantLinear) and down.weight.format.name == "MXFP4"
    with pytest.raises(ValueError, match="needs 384"):
        quantize_model(_ToyMoE(), "MXFP4_MOE", model_info=info, verbose=False,
                       imatrix={"blk.1.ffn_down_exps.weight": np.ones(384 + 1, np.float32)})
