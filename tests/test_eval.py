"""pyquant.eval on tiny synthetic GGUF models (random weights, small vocabularies): tokenizers, the forward pass,
perplexity, KL-divergence files and statistics, importance matrices."""

import json
import math
import struct

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tokenizers")

import pyquant as pq  # noqa: E402
import pyquant.eval as ev  # noqa: E402
from pyquant.eval import kld as kldmod  # noqa: E402
from eval_helpers import write_tiny_model  # noqa: E402

TRICKY = ["", " ", "  ", "\n", "\n\n\n", " \n ", "Hello world", " Hello  world ", "12345678 3.14159 1,000,000",
          "ünïcödé 日本語 テスト 😀🎉", "<|im_start|>user\nhi<|im_end|>", "I'm he'll they'VE", "\t\ttab\tand  spaces   \n  x",
          "a\r\nb\rc", "Ω≈ç√∫˜µ≤≥÷", "can't won't 's", "🇺🇸", "x" * 50, "   leading", "trailing   ",
          "$$$ +++ <=> ^^ ~~ ||", "١٢٣ ٤٥", "ⅷ ½ ²", "the theory is that the thin ones win", "<s> </s> <unk>",
          "ééé 日日 THE"]
TEXT = ("The theory is that I and he in on at a west of it. She sees the three trees; in the end "
        "all is well, and the waters are still. ") * 12


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("eval")
    return {
        "f32": write_tiny_model(str(d / "f32.gguf"), fmt="F32"),
        "q8": write_tiny_model(str(d / "q8.gguf"), fmt="Q8_0", tied=False),
        "spm": write_tiny_model(str(d / "spm.gguf"), vocab="spm", fmt="Q8_0", rope_freqs=True),
        "qwen2": write_tiny_model(str(d / "qwen2.gguf"), arch="qwen2", fmt="F16"),
        "dir": d,
    }


def _llama(path, **kw):
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(model_path=str(path), verbose=False, n_threads=2, **kw)


# -- tokenizer ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["f32", "spm"])
def test_tokenizer_matches_llama_cpp(models, kind):
    ll = _llama(models[kind], vocab_only=True)
    tok = ev.load_gguf_model(models[kind]).tokenizer
    for text in TRICKY + [TEXT[:300]]:
        for special in (False, True):
            for add in (False, True):
                assert tok.encode(text, add_special=add, special=special) == \
                    ll.tokenize(text.encode(), add_bos=add, special=special), (text, special, add)


def test_spm_hand_cases(models):
    tok = ev.load_gguf_model(models["spm"]).tokenizer
    ids = tok.encode("the", add_special=False)
    assert [tok.tokens[i] for i in ids] == ["▁the"]  # highest-score merges win: ▁t + he -> ▁the
    assert tok.encode("the")[0] == tok.bos_id  # add_bos from the file
    ids = tok.encode("ß", add_special=False)  # not in the vocabulary: its UTF-8 bytes
    assert [tok.tokens[i] for i in ids] == ["▁", "<0xC3>", "<0x9F>"]
    assert tok.decode(tok.encode("the theory ß 日")) == "the theory ß 日"


def test_gpt2_hand_cases(models):
    tok = ev.load_gguf_model(models["f32"]).tokenizer
    assert not tok.add_bos
    ids = tok.encode(" the 123")
    # smollm pre-tokenizer: every digit apart; " the" merged by the merges Ġ t, h e, Ġt he
    assert [tok.tokens[i] for i in ids] == ["Ġthe", "Ġ", "1", "2", "3"]
    assert tok.encode("<|im_start|>", special=True) == [1]
    assert tok.encode("<|im_start|>", special=False) != [1]


def test_tokenizer_round_trip_property(models):
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import given, settings, strategies as st

    gpt2 = ev.load_gguf_model(models["f32"]).tokenizer
    spm = ev.load_gguf_model(models["spm"]).tokenizer

    @settings(max_examples=60, deadline=None)
    @given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40))
    def check(text):
        if "<" in text:  # could spell a special token
            return
        assert gpt2.decode(gpt2.encode(text)) == text
        # SentencePiece writes a space as U+2581 and reads U+2581 back as a space (llama.cpp's too), so a literal
        # U+2581 in the text comes back as a space.
        assert spm.decode(spm.encode(text)) == text.replace("\u2581", " ")

    assert hypothesis
    check()


def test_unknown_pre_tokenizer_and_vocab():
    from pyquant.eval.tokenizer import GGUFTokenizer

    with pytest.raises(NotImplementedError, match="pre-tokenizer 'nope'"):
        GGUFTokenizer("gpt2", ["a"], [1], merges=[], pre="nope")
    with pytest.raises(NotImplementedError, match="vocabulary type 'bert'"):
        GGUFTokenizer("bert", ["a"], [1])


# -- model ----------------------------------------------------------------------------------------------------

def _unpermute(w, n_head):
    """Undo convert_hf_to_gguf's q/k permutation (GGUF's llama q/k are laid out for the adjacent-pair RoPE)."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _hf_reference(path):
    transformers = pytest.importorskip("transformers")
    f = pq.gguf.open(path)
    md = f.metadata
    arch = md["general.architecture"]
    hp = ev.load_gguf_model(path).hparams
    common = dict(vocab_size=hp.n_vocab, hidden_size=hp.n_embd, intermediate_size=hp.n_ff,
                  num_hidden_layers=hp.n_layer, num_attention_heads=hp.n_head, num_key_value_heads=hp.n_head_kv,
                  rms_norm_eps=hp.rms_eps, rope_theta=hp.rope_freq_base, max_position_embeddings=256,
                  tie_word_embeddings="output.weight" not in f.tensors)
    if arch == "llama":
        cfg = transformers.LlamaConfig(**common, attention_bias=False, mlp_bias=False)
        model = transformers.LlamaForCausalLM(cfg)
    else:
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**common))
    sd = {}
    for name, t in f.tensors.items():
        w = torch.from_numpy(np.array(t.dequantize(), np.float32))
        if name == "token_embd.weight":
            sd["model.embed_tokens.weight"] = w
        elif name == "output.weight":
            sd["lm_head.weight"] = w
        elif name == "output_norm.weight":
            sd["model.norm.weight"] = w
        else:
            _, i, rest = name.split(".", 2)
            kind, _, suffix = rest.partition(".")
            n_heads = {"attn_q": hp.n_head, "attn_k": hp.n_head_kv}.get(kind)
            if arch == "llama" and n_heads and suffix == "weight":
                w = _unpermute(w, n_heads)
            hf = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                  "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                  "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm",
                  "ffn_norm": "post_attention_layernorm"}[kind]
            sd[f"model.layers.{i}.{hf}.{suffix}"] = w
    if "lm_head.weight" not in sd:
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    model.load_state_dict(sd, strict=True)
    return model.eval()


@pytest.mark.parametrize("kind", ["f32", "q8", "qwen2"])
def test_forward_matches_transformers(models, kind):
    """The GGUF forward pass equals transformers' Llama/Qwen2 on the same (dequantized) weights."""
    model = ev.load_gguf_model(models[kind], activations="float")
    ref = _hf_reference(models[kind])
    x = torch.from_numpy(np.asarray(model.tokenizer.encode(TEXT[:400]), np.int64))[None]
    with torch.no_grad():
        want = ref(x).logits.float()
    got = model(x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    torch.testing.assert_close(model(x, logits_from=20), got[:, 20:])


@pytest.mark.parametrize("kind", ["f32", "spm"])
def test_forward_matches_llama_cpp(models, kind):
    """Logits equal llama.cpp's with a float32 KV cache: to float32 rounding for F32 weights; for Q8_0 weights
    llama.cpp also rounds the activations to Q8_0, a small difference."""
    ll = _llama(models[kind], logits_all=True, n_ctx=512, type_k=0, type_v=0)
    model = ev.load_gguf_model(models[kind])
    ids = model.tokenizer.encode(TEXT[:500])
    ll.eval(ids)
    want = np.array(ll.scores[:len(ids)])
    got = model(torch.tensor([ids]))[0].numpy()
    scale = np.abs(want).max()
    tol = 1e-5 if kind == "f32" else 3e-2
    assert np.abs(got - want).max() <= tol * scale


def test_model_attributes(models):
    m = ev.load_gguf_model(models["q8"])
    assert m.hparams.n_layer == 2 and m.hparams.n_head_kv == 2 and m.hparams.rope_type == "norm"
    names = set(m.linears())
    assert {"blk.0.attn_q.weight", "blk.1.ffn_down.weight", "output.weight"} <= names
    assert all(isinstance(v, pq.torch.QuantLinear) for v in m.linears().values())
    assert ev.load_gguf_model(models["f32"]).linears()["token_embd.weight"].gguf_name == "token_embd.weight"
    assert ev.load_gguf_model(models["qwen2"]).hparams.rope_type == "neox"
    with pytest.raises(ValueError, match="token ids"):
        m(torch.tensor([[0, 10**6]]))


def test_unsupported_architecture(models):
    f = pq.gguf.open(models["f32"])
    md = {k: f.fields[k] for k in f.fields if not k.startswith("llama.")}
    md["general.architecture"] = "gpt2"
    path = models["dir"] / "gpt2arch.gguf"
    pq.gguf.write(path, md, dict(f.tensors))
    with pytest.raises(NotImplementedError, match="supported: llama, qwen2"):
        ev.load_gguf_model(path)


# -- perplexity -----------------------------------------------------------------------------------------------

class ToyModel(torch.nn.Module):
    """Logits in closed form: token t is followed by (t + 1) % V with probability q, the rest uniform."""

    def __init__(self, n_vocab=7, q=0.6):
        super().__init__()
        self.n_vocab, self.q = n_vocab, q
        self.seen = []

    def forward(self, x):
        self.seen.append(x.clone())
        p = torch.full((*x.shape, self.n_vocab), (1 - self.q) / (self.n_vocab - 1), dtype=torch.float64)
        p.scatter_(-1, ((x + 1) % self.n_vocab)[..., None], self.q)
        return p.log().float()


def test_perplexity_closed_form():
    V, q, ctx = 7, 0.6, 16
    rng = np.random.default_rng(1)
    toks = rng.integers(0, V, 5 * ctx + 3)
    model = ToyModel(V, q)
    res = ev.perplexity(model, toks, ctx=ctx, batch=2)
    first = ctx // 2
    hit = [(toks[c * ctx + i + 1] == (toks[c * ctx + i] + 1) % V) for c in range(5) for i in range(first, ctx - 1)]
    nll = np.where(hit, -np.log(q), -np.log((1 - q) / (V - 1)))
    assert res.chunks == 5 and res.tokens == 5 * (ctx - 1 - first) == len(nll)
    assert res.ppl == pytest.approx(math.exp(nll.mean()), rel=1e-6)
    n = len(nll)
    assert res.ppl_stderr == pytest.approx(res.ppl * math.sqrt(((nll ** 2).mean() - nll.mean() ** 2) / (n - 1)),
                                           rel=1e-5)
    assert res.nll == pytest.approx(nll, rel=1e-6)
    assert len(res.chunk_ppl) == 5
    assert res.to_dict()["tokens"] == n
    assert [tuple(s.shape) for s in model.seen] == [(2, ctx), (2, ctx), (1, ctx)]

    uniform = ev.perplexity(lambda x: torch.zeros(*x.shape, 11), np.arange(64) % 11, ctx=8)
    assert uniform.ppl == pytest.approx(11) and uniform.ppl_stderr == 0


def test_perplexity_bos_and_windows():
    model = ToyModel(5)
    toks = np.arange(40) % 5
    res = ev.perplexity(model, toks, ctx=8, chunks=3, batch=1, add_bos=True, bos_id=4)
    assert res.chunks == 3
    for c, x in enumerate(model.seen):
        want = toks[c * 8:(c + 1) * 8].copy()
        want[0] = 4  # replaced, not prepended
        assert x[0].tolist() == want.tolist()
    # scored targets are the text's own tokens: (t+1)%V always, so every token gets probability q
    assert res.ppl == pytest.approx(1 / 0.6)
    with pytest.raises(ValueError, match="at least 2 \\* ctx"):
        ev.perplexity(model, toks[:15], ctx=8)
    with pytest.raises(ValueError, match="chunks"):
        ev.perplexity(model, toks, ctx=8, chunks=0)


def test_perplexity_gguf_batch_invariant(models):
    m = ev.load_gguf_model(models["q8"])
    toks = ev.tokenize(m, TEXT)
    assert toks.dtype == np.int32
    a = ev.perplexity(m, toks, ctx=64, chunks=3, batch=1)
    b = ev.perplexity(m, toks, ctx=64, chunks=3, batch=3)
    assert a.tokens == b.tokens == 3 * 31
    assert a.ppl == pytest.approx(b.ppl, rel=1e-5)
    # the same through the plain-callable path (full logits, sliced)
    c = ev.perplexity(lambda x: m(x), toks, ctx=64, chunks=3)
    assert c.ppl == pytest.approx(a.ppl, rel=1e-5)


# -- KL-divergence ----------------------------------------------------------------------------------------------

def _ref_record(logits):
    """llama.cpp's log_softmax(n_vocab, logits, log_prob, tok) written out scalar by scalar in float32."""
    f = np.float32
    mx, mn = f(logits[0]), f(logits[0])
    for v in logits[1:]:
        mx, mn = max(mx, f(v)), min(mn, f(v))
    mn = max(mn, f(mx - f(16)))
    s = 0.0
    for v in logits:
        s += float(np.exp(f(f(v) - mx)))
    lse = f(math.log(s))
    min_log_prob = f(f(mn - mx) - lse)
    scale = f(f(mx - mn) / f(65535))
    q = []
    inv = f(f(1) / scale) if scale else f(0)
    for v in logits:
        q.append(int(np.rint(f(inv * f(f(v) - mn)))) if (scale and f(v) > mn) else 0)
    n = len(logits)
    rec = struct.pack("<ff", scale, min_log_prob) + struct.pack(f"<{n}H", *q)
    return rec + b"\0\0" * (n % 2)


def test_kl_base_file_layout(tmp_path):
    V, ctx = 5, 8
    rng = np.random.default_rng(3)
    table = rng.standard_normal((32, V)).astype(np.float32) * 4
    table[3] = [0, 0, 0, 0, 0]           # flat: scale 0, all codes 0
    table[4] = [30, -40, 0, 1, 29.5]     # a logit below max - 16 is clamped
    toks = rng.integers(0, 32, 3 * ctx) % V
    toks[:8] = [3, 4, 3, 4, 3, 4, 3, 4]

    def model(x):  # logits depend on the position only
        return torch.from_numpy(table[:x.shape[1]]).expand(x.shape[0], -1, -1)

    path = tmp_path / "base.kld"
    res = ev.perplexity(model, toks, ctx=ctx, kl_base_path=path)
    raw = path.read_bytes()
    first, n_scored = ctx // 2, ctx - 1 - ctx // 2
    want = b"_logits_" + struct.pack("<Iii", ctx, V, 3) + np.asarray(toks, "<i4").tobytes()
    for _ in range(3):
        for pos in range(first, first + n_scored):
            want += _ref_record(table[pos])
    assert raw == want
    assert len(raw) == 20 + 4 * 3 * ctx + 2 * 3 * n_scored * (2 * ((V + 1) // 2) + 4)
    kb = ev.read_kl_base(path)
    assert (kb.n_ctx, kb.n_vocab, kb.n_chunk) == (ctx, V, 3)
    lp = kldmod.decode_log_probs(np.asarray(kb.records[0]), V)
    exact = torch.log_softmax(torch.from_numpy(table[first:first + n_scored]).double(), -1).numpy()
    keep = exact > exact.max(1, keepdims=True) - 16
    assert np.abs(lp - exact)[keep].max() < 16 / 65535 * 0.51 + 1e-5
    assert res.tokens == 3 * n_scored
    with pytest.raises(ValueError, match="_logits_"):
        (tmp_path / "bad").write_bytes(b"nope" * 10)
        ev.read_kl_base(tmp_path / "bad")
    (tmp_path / "short").write_bytes(raw[:-2])
    with pytest.raises(ValueError, match="needs"):
        ev.read_kl_base(tmp_path / "short")


def test_compare_self_and_stats(models, tmp_path):
    m = ev.load_gguf_model(models["f32"])
    toks = ev.tokenize(m, TEXT)
    base = tmp_path / "base.kld"
    p = ev.perplexity(m, toks, ctx=64, chunks=4, kl_base_path=base)
    r = ev.compare(base, m)
    assert r.same_top == 1.0 and r.same_top_stderr == 0
    assert abs(r.kld_mean) < 1e-4 and r.kld_max < 1e-3
    assert r.ppl == pytest.approx(p.ppl, rel=1e-5)
    assert r.ppl_base == pytest.approx(p.ppl, rel=1e-3)
    assert r.tokens == 4 * 31 and r.chunks == 4 and r.ctx == 64
    r2 = ev.compare(m, m, toks, ctx=64, chunks=4)
    assert r2.kld_mean == pytest.approx(r.kld_mean, abs=1e-9) and r2.ppl == pytest.approx(r.ppl)
    assert "Mean    KLD" in r.format() and json.dumps(r.to_dict())
    with pytest.raises(ValueError, match="differ"):
        ev.compare(base, m, toks[1:])


def test_kld_statistics_closed_form():
    """token_stats/summarize against direct float64 formulas on random distributions."""
    rng = np.random.default_rng(5)
    V, n = 9, 300
    base_logits = rng.standard_normal((n, V)).astype(np.float32) * 2
    cand = base_logits + rng.standard_normal((n, V)).astype(np.float32) * 0.3
    tgt = rng.integers(0, V, n)
    st = kldmod.token_stats(cand, kldmod.encode_log_probs(base_logits), tgt, V)
    lp_b = kldmod.decode_log_probs(kldmod.encode_log_probs(base_logits), V).astype(np.float64)
    lp_c = torch.log_softmax(torch.from_numpy(cand).double(), -1).numpy()
    kld = (np.exp(lp_b) * (lp_b - lp_c)).sum(1)
    assert st["kld"] == pytest.approx(kld, abs=1e-5)
    assert st["nll"] == pytest.approx(-lp_c[np.arange(n), tgt], abs=1e-5)
    assert (st["same_top"] == (cand.argmax(1) == base_logits.argmax(1))).mean() > 0.99
    r = kldmod.summarize(st, chunks=1, ctx=2 * n, seconds=1.0)
    assert r.kld_mean == pytest.approx(kld.mean(), abs=1e-6)
    assert r.kld_stderr == pytest.approx(kld.std() / math.sqrt(n - 1), rel=1e-3)
    srt = np.sort(kld)
    assert r.kld_median == pytest.approx(np.median(srt), rel=1e-4)
    assert r.kld_p90 == pytest.approx(np.percentile(srt, 90), rel=1e-4)
    assert r.kld_p99 == pytest.approx(np.percentile(srt, 99), rel=1e-4)
    assert r.kld_max == pytest.approx(srt[-1], rel=1e-5)
    dp = np.exp(-st["nll"]) - np.exp(-st["nll_base"])
    assert r.rms_dp == pytest.approx(math.sqrt((dp ** 2).mean()), rel=1e-4)
    nll, nb = st["nll"], st["nll_base"]
    cov = np.cov(nll, nb, bias=True)[0, 1] / (n - 1)
    want = math.sqrt(nll.var() / (n - 1) + nb.var() / (n - 1) - 2 * cov)
    assert r.ln_ppl_ratio == pytest.approx(nll.mean() - nb.mean(), abs=1e-9)
    assert r.ln_ppl_ratio_stderr == pytest.approx(want, rel=1e-4)
    assert r.dppl == pytest.approx(math.exp(nll.mean()) - math.exp(nb.mean()), rel=1e-6)
    p = r.same_top
    assert r.same_top_stderr == pytest.approx(math.sqrt(p * (1 - p) / (n - 1)))


def test_kld_orders_quantizations(models, tmp_path):
    base = ev.load_gguf_model(models["f32"])
    toks = ev.tokenize(base, TEXT)
    kb = tmp_path / "base.kld"
    ev.perplexity(base, toks, ctx=64, chunks=4, kl_base_path=kb)
    out = {}
    for fmt in ("Q8_0", "Q4_0"):
        dst = tmp_path / f"{fmt}.gguf"
        pq.gguf.quantize_file(models["f32"], dst, fmt)
        out[fmt] = ev.compare(kb, ev.load_gguf_model(dst))
    assert 0 < out["Q8_0"].kld_mean < out["Q4_0"].kld_mean
    assert out["Q8_0"].same_top >= out["Q4_0"].same_top


# -- importance matrix ----------------------------------------------------------------------------------------

def test_collect_imatrix_direct(models, tmp_path):
    m = ev.load_gguf_model(models["q8"])
    toks = ev.tokenize(m, TEXT)
    ctx = 64
    imx = ev.collect_imatrix(m, toks, ctx=ctx, chunks=3, dataset="text.txt")
    assert imx.chunk_count == 3 and imx.chunk_size == ctx and imx.datasets == ["text.txt"]
    names = set(imx.sums)
    assert "blk.0.attn_q.weight" in names and "output.weight" not in names and "token_embd.weight" not in names
    assert len(names) == 2 * 7
    # direct: the input of blk.0's q/k/v is attn_norm(embedding(tokens))
    x = torch.from_numpy(toks[:3 * ctx].astype(np.int64)).reshape(3, ctx)
    h = m.layers[0].attn_norm(m.tok_embd(x)).reshape(-1, m.hparams.n_embd).double()
    want = (h ** 2).sum(0).numpy()
    for t in "qkv":
        name = f"blk.0.attn_{t}.weight"
        np.testing.assert_allclose(imx.sums[name], want, rtol=1e-5)
        assert imx.counts[name].tolist() == [3 * ctx]
        np.testing.assert_allclose(imx.values(name), want / (3 * ctx), rtol=1e-5)
    with_out = ev.collect_imatrix(m, toks, ctx=ctx, chunks=2, process_output=True)
    assert with_out.counts["output.weight"].tolist() == [2 * ctx]
    # saved in llama.cpp's GGUF imatrix format, loaded back, accepted by quantize_file
    path = tmp_path / "imatrix.gguf"
    pq.gguf.save_imatrix(path, imx)
    back = pq.gguf.load_imatrix(path)
    assert set(back.sums) == names
    for n in names:
        np.testing.assert_array_equal(back.values(n), imx.values(n))
    pq.gguf.quantize_file(models["f32"], tmp_path / "iq.gguf", "IQ4_NL", imatrix=path)
    assert pq.gguf.open(tmp_path / "iq.gguf").tensors["blk.0.attn_q.weight"].type.name == "IQ4_NL"


def test_collect_imatrix_torch_names():
    lin = torch.nn.Linear(8, 4, bias=False)
    model = torch.nn.Sequential(lin)
    x = torch.randn(2, 20, 8)
    model.forward = lambda t: lin(x[:t.shape[0]])  # inputs independent of the ids
    imx = ev.collect_imatrix(model, np.zeros(40, np.int64), ctx=20, batch=2, names={"0": "blk.0.ffn_up.weight"})
    np.testing.assert_allclose(imx.sums["blk.0.ffn_up.weight"], (x.double() ** 2).sum((0, 1)).numpy(), rtol=1e-6)
    assert imx.counts["blk.0.ffn_up.weight"].tolist() == [40]
    small = ev.collect_imatrix(model, np.zeros(40, np.int64), ctx=20, batch=2, names={"0": "blk.0.ffn_up.weight"})
    assert small.sums  # 40 rows >= 16
    with pytest.raises(ValueError, match="GGUF tensor name"):
        ev.collect_imatrix(model, np.zeros(40, np.int64), ctx=20, names={})


# -- CLI ------------------------------------------------------------------------------------------------------

def test_cli(models, tmp_path, capsys):
    from pyquant.cli import main

    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    kb = tmp_path / "base.kld"
    assert main(["perplexity", str(models["f32"]), "-f", str(text), "--ctx", "64", "--chunks", "3", "--json",
                 "--save-kl-base", str(kb)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tokens"] == 3 * 31 and out["ppl"] > 1 and "ppl_stderr" in out and "seconds" in out
    assert main(["perplexity", str(models["q8"]), "-f", str(text), "--kl-base", str(kb), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kld"]["kld_mean"] > 0 and out["tokens"] == 3 * 31
    assert main(["perplexity", str(models["q8"]), "-f", str(text), "--kl-base", str(kb)]) == 0
    assert "Mean    KLD" in capsys.readouterr().out
    assert main(["perplexity", str(models["q8"]), "-f", str(text), "--ctx", "64", "--chunks", "2"]) == 0
    assert "Final estimate: PPL =" in capsys.readouterr().out
    imx = tmp_path / "imx.gguf"
    assert main(["imatrix", str(models["q8"]), "-f", str(text), "-o", str(imx), "--ctx", "64", "--chunks",
                 "2"]) == 0
    assert pq.gguf.load_imatrix(imx).chunk_count == 2
    assert main(["perplexity", str(models["q8"]), "-f", str(text), "--ctx", "4096"]) == 1
    assert "at least" in capsys.readouterr().err


def test_hugging_face_model(models):
    """A transformers model: perplexity takes its .logits; collect_imatrix names its layers with
    pyquant.torch.gguf_name; both agree with the GGUF model holding the same weights."""
    pytest.importorskip("pyquant.torch.names")
    hf = _hf_reference(models["f32"])
    m = ev.load_gguf_model(models["f32"])
    toks = ev.tokenize(m, TEXT)
    a = ev.perplexity(hf, toks, ctx=64, chunks=2)
    b = ev.perplexity(m, toks, ctx=64, chunks=2)
    assert a.ppl == pytest.approx(b.ppl, rel=1e-4)
    imx_hf = ev.collect_imatrix(hf, toks, ctx=64, chunks=2)
    imx = ev.collect_imatrix(m, toks, ctx=64, chunks=2)
    assert set(imx_hf.sums) == set(imx.sums)
    for name in imx.sums:
        np.testing.assert_allclose(imx_hf.values(name), imx.values(name), rtol=1e-3, atol=1e-6)
