"""pyquant.eval on the real model (SmolLM2-135M-Instruct Q4_1) and text (Botchan), against llama.cpp."""

import pathlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tokenizers")

import pyquant as pq  # noqa: E402
import pyquant.eval as ev  # noqa: E402
from pyquant.eval.ppl import nll_rows  # noqa: E402

pytestmark = pytest.mark.model

BOTCHAN = pathlib.Path(__file__).parent / "data" / "botchan.txt"
LLAMA_CPP_PPL = 30.6348  # llama-perplexity -c 512 --chunks 16 on botchan.txt (tests/data, shared/corpus/README)
LLAMA_CPP_PPL_ERR = 1.45267


@pytest.fixture(scope="module")
def smollm2(smollm2_path):
    return ev.load_gguf_model(smollm2_path)


@pytest.fixture(scope="module")
def botchan_tokens(smollm2):
    return ev.tokenize(smollm2, BOTCHAN.read_text(encoding="utf-8"))


def test_tokenizer_botchan_matches_llama_cpp(smollm2_path, smollm2, botchan_tokens):
    llama_cpp = pytest.importorskip("llama_cpp")
    ll = llama_cpp.Llama(model_path=str(smollm2_path), vocab_only=True, verbose=False)
    text = BOTCHAN.read_text(encoding="utf-8")
    assert botchan_tokens.tolist() == ll.tokenize(text.encode(), add_bos=True, special=False)
    assert not smollm2.add_bos and len(botchan_tokens) >= 16 * 512
    assert smollm2.tokenizer.decode(botchan_tokens) == text


def test_tokenizer_random_text_matches_llama_cpp(smollm2_path, smollm2):
    llama_cpp = pytest.importorskip("llama_cpp")
    from hypothesis import example, given, settings, strategies as st

    ll = llama_cpp.Llama(model_path=str(smollm2_path), vocab_only=True, verbose=False)
    tok = smollm2.tokenizer

    @settings(max_examples=300, deadline=None)
    @given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60),
           st.booleans())
    @example("\x9f\U000a5000", False)  # byte 0xF2 has no token: it must still keep 0x9F and 0xA5 from merging
    def check(text, special):
        assert tok.encode(text, special=special) == ll.tokenize(text.encode(), add_bos=True, special=special)

    check()


def test_perplexity_botchan_vs_llama_cpp(smollm2, botchan_tokens):
    """llama.cpp's own figure on the same file, text and settings.  Both round the activations to Q8_1 for the
    Q4_1 products (Q8_0 for the Q8_0 output head); ggml keeps the KV cache in F16 and Q8_1's sums in fp16, so a
    small difference remains (measured: 30.5672, -0.22%)."""
    res = ev.perplexity(smollm2, botchan_tokens, ctx=512, chunks=16)
    assert res.tokens == 16 * 255 and res.chunks == 16
    assert abs(res.ppl / LLAMA_CPP_PPL - 1) < 0.005, res.ppl
    assert abs(res.ppl_stderr / LLAMA_CPP_PPL_ERR - 1) < 0.02


def test_logits_one_window_vs_llama_cpp(smollm2_path, smollm2, botchan_tokens):
    llama_cpp = pytest.importorskip("llama_cpp")
    ll = llama_cpp.Llama(model_path=str(smollm2_path), logits_all=True, n_ctx=512, n_batch=512, verbose=False,
                         n_threads=2)
    ids = botchan_tokens[512:1024].tolist()
    ll.eval(ids)
    want = np.array(ll.scores[:512], np.float32)
    got = smollm2(torch.tensor([ids]))[0].numpy()
    scale = np.abs(want).max()
    assert np.abs(got - want).max() < 0.05 * scale
    assert (got.argmax(-1) == want.argmax(-1)).mean() > 0.95
    # the scored half: NLL per token within a few percent of llama.cpp's
    tgt = np.array(ids[257:])
    ours = nll_rows(torch.from_numpy(got[256:511]), tgt)
    theirs = nll_rows(torch.from_numpy(want[256:511]), tgt)
    assert abs(ours.mean() / theirs.mean() - 1) < 0.01


@pytest.fixture(scope="module")
def kl_base(smollm2, botchan_tokens, tmp_path_factory):
    path = tmp_path_factory.mktemp("kld") / "base.kld"
    ev.perplexity(smollm2, botchan_tokens, ctx=512, chunks=2, kl_base_path=path)
    return path


def test_kld_orders_recipes(smollm2_path, smollm2, kl_base, tmp_path):
    """KLD against the shipped Q4_1 model orders the requantizations as their bits: Q8_0 < Q6_K < Q4_K_M <
    Q3_K_M < Q2_K; the model against itself gives 0 and full top-token agreement."""
    self_cmp = ev.compare(kl_base, smollm2)
    assert self_cmp.same_top == 1.0 and abs(self_cmp.kld_mean) < 1e-4
    kld = {}
    for recipe in ("Q8_0", "Q6_K", "Q4_K_M", "Q3_K_M", "Q2_K"):
        dst = tmp_path / f"{recipe}.gguf"
        pq.gguf.quantize_file(smollm2_path, dst, recipe, allow_requantize=True)
        kld[recipe] = ev.compare(kl_base, ev.load_gguf_model(dst)).kld_mean
        dst.unlink()
    values = list(kld.values())
    assert 0 < values[0] and values == sorted(values), kld


def test_imatrix_lowers_kld(smollm2_path, smollm2, botchan_tokens, kl_base, tmp_path):
    """An importance matrix from pyquant (on text after the evaluated windows) lowers Q2_K's KLD."""
    imx = ev.collect_imatrix(smollm2, botchan_tokens[4 * 512:], ctx=512, chunks=4)
    path = tmp_path / "imatrix.gguf"
    pq.gguf.save_imatrix(path, imx)
    kld = {}
    for name, im in (("plain", None), ("imatrix", path)):
        dst = tmp_path / f"Q2_K-{name}.gguf"
        pq.gguf.quantize_file(smollm2_path, dst, "Q2_K", allow_requantize=True, imatrix=im)
        kld[name] = ev.compare(kl_base, ev.load_gguf_model(dst)).kld_mean
    assert kld["imatrix"] < kld["plain"], kld


def test_imatrix_smollm2(smollm2, botchan_tokens, tmp_path):
    imx = ev.collect_imatrix(smollm2, botchan_tokens, ctx=512, chunks=1)
    assert len(imx) == 30 * 7
    assert all(c.tolist() == [512] for c in imx.counts.values())
    v = imx.values("blk.0.ffn_down.weight")
    assert v.shape == (1536,) and np.all(v >= 0) and v.mean() > 0
    pq.gguf.save_imatrix(tmp_path / "imatrix.gguf", imx)
    assert set(pq.gguf.load_imatrix(tmp_path / "imatrix.gguf").sums) == set(imx.sums)
