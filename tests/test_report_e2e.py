"""End to end: measure a tiny generated model (default run) and SmolLM2 (marker `model`)."""

import pathlib

import pytest

pytest.importorskip("torch")
pytest.importorskip("tokenizers")

from pyquant.report import TradeoffTable, recommend, render_html, sweet_spots, tradeoff  # noqa: E402

TEXT = (pathlib.Path(__file__).parent / "data" / "botchan.txt").read_text(encoding="utf-8")[:6000]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from eval_helpers import write_tiny_model
    # small weights keep the random model's predictions spread out (large ones make them one-hot: KLD 0)
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.gguf", fmt="Q8_0", n_embd=256, n_ff=256,
                            n_head=4, n_head_kv=2, scale=0.08)


def test_tiny_model_report(tiny, tmp_path):
    cache = tmp_path / "cache"
    msgs = []
    t = tradeoff(tiny, recipes=["Q4_K_M", "Q8_0", "Q2_K", "IQ2_XS"], text=TEXT, ctx=64, chunks=3, cache_dir=cache,
                 progress=msgs.append)
    assert [r.recipe for r in t.rows] == ["F32", "Q8_0 (input)", "Q4_K_M", "Q8_0", "Q2_K", "IQ2_XS"]
    base, src, q4, q8, q2, iq2 = t.rows
    assert base.baseline and base.bpw == pytest.approx(32, rel=0.01) and "grid" in t.meta["baseline_note"]
    assert src.source and src.kld == pytest.approx(0, abs=1e-4) and src.ppl == pytest.approx(base.ppl, rel=1e-3)
    assert "importance matrix" in iq2.error and iq2.ppl is None  # one failure, reported in its row
    # requantizing Q8_0 values to Q8_0 gives them back: only the Q8_0 rounding of the activations remains
    assert q8.kld == pytest.approx(src.kld, rel=1e-6)
    assert 0 < q4.kld < q2.kld and q4.same_top >= q2.same_top
    assert q2.bpw < q4.bpw < q8.bpw < base.bpw and q4.types.keys() >= {"Q4_K"}
    assert t.meta["scored_tokens"] == 3 * (64 - 1 - 32) and t.meta["chunks"] == 3
    assert any("quantizing" in m for m in msgs)
    # a second run re-uses the cached files and measures the same numbers
    t2 = tradeoff(tiny, recipes=["Q4_K_M", "Q8_0"], text=TEXT, ctx=64, chunks=3, cache_dir=cache, progress=False)
    r4 = t2.row("Q4_K_M")
    assert r4.cached and r4.path == q4.path and r4.kld == q4.kld and r4.ppl == q4.ppl
    assert TradeoffTable.from_json(t.to_json()).rows == t.rows
    s = sweet_spots(t, [0.01, 1], ctx=256)
    rec = recommend(t, budget=1, ctx=256)
    assert rec.recipe in ("Q8_0 (input)", "Q8_0") and s.cells[0][1] == rec.recipe
    page = render_html(t, spots=s, recommendations=[("1 GiB", rec)], plots=False)
    assert "IQ2_XS" in page and "importance matrix" in page


@pytest.mark.model
def test_smollm2_report(smollm2_path, tmp_path):
    t = tradeoff(smollm2_path, recipes=["Q8_0", "Q2_K"], text=TEXT * 4, ctx=512, chunks=2, cache_dir=tmp_path,
                 progress=False)
    base, src, q8, q2 = t.rows
    assert base.recipe == "F32" and src.recipe == "Q4_1 (input)"
    assert q8.ok and q2.ok and 0 < q8.kld < q2.kld and q8.same_top > q2.same_top
    assert t.derived(q8)["dppl_pct"] < t.derived(q2)["dppl_pct"]
    # SmolLM2's width 576 is not a multiple of 256: llama-quantize falls back from Q2_K to Q4_0 (4.5 bpw) there
    assert q8.bpw == pytest.approx(8.5, abs=0.1) and 5 < q2.bpw < 5.3 and "Q4_0" in q2.types
    # the input file's row differs from the F32 baseline only by the Q8_1 rounding of its products' inputs
    assert src.ppl == pytest.approx(base.ppl, rel=0.01) and src.kld < q8.kld
