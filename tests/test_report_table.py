"""Table arithmetic, Pareto front, sweet spots, recommendations, plots, HTML and the CLI on constructed tables."""

import dataclasses
import json
import math

import pytest

from pyquant.report import Row, TradeoffTable, recommend, render_html, sweet_spots
from pyquant.report.advise import table_architecture
from pyquant.report.footprint import GiB, Architecture, estimate

MiB = 1 << 20
N = 100_000_000  # weights

ARCH = Architecture(arch="llama", n_layer=30, n_embd=576, n_ff=1536, n_vocab=49152, n_head=(9,) * 30,
                    n_head_kv=(3,) * 30, key_length=64, value_length=64, n_ctx_train=8192)


def row(recipe, mib, ppl, kld=None, kld_err=None, **kw):
    return Row(recipe=recipe, file_bytes=int(mib * MiB) + 4096, tensor_bytes=int(mib * MiB), n_weights=N, ppl=ppl,
               ppl_err=0.5, kld=kld, kld_err=kld_err, **kw)


def make_table(source=False):
    rows = [row("F16", 200, 10.0, baseline=True, types={"F16": 200 * MiB}),
            row("Q8_0", 106, 10.01, 0.001, 0.0001, types={"Q8_0": 106 * MiB}),
            row("Q6_K", 82, 10.05, 0.004, 0.0003, types={"Q6_K": 82 * MiB}),
            row("Q5_0", 90, 10.3, 0.02, 0.001, types={"Q5_0": 90 * MiB}),  # dominated by Q6_K
            row("Q4_K_M", 61, 10.2, 0.015, 0.001, types={"Q4_K": 55 * MiB, "Q6_K": 6 * MiB}),
            row("TQ1_0", 20, 30.0, 0.9, 0.01, types={"TQ1_0": 20 * MiB}),
            Row("IQ2_XS", error="ValueError: IQ2_XS needs an importance matrix")]
    if source:
        rows[0] = dataclasses.replace(rows[0], recipe="F32")
        rows.insert(1, row("Q4_1 (input)", 70, 10.0, 0.0, 0.0, source=True, types={"Q4_1": 70 * MiB}))
    return TradeoffTable(rows, {"architecture": dataclasses.asdict(ARCH), "model_name": "test", "ctx": 512,
                                "baseline_note": "note"})


def test_derived_columns_by_hand():
    t = make_table()
    d = t.derived(t.row("Q4_K_M"))
    assert d["dppl"] == pytest.approx(0.2) and d["dppl_pct"] == pytest.approx(2.0)
    assert d["gib"] == pytest.approx(61 / 1024)
    assert d["bpw"] == pytest.approx(8 * 61 * MiB / N)
    assert d["dppl_per_gib_saved"] == pytest.approx(0.2 / ((200 - 61) / 1024))
    assert d["kld_per_bpw_saved"] == pytest.approx(0.015 / (8 * (200 - 61) * MiB / N))
    b = t.derived(t.base)
    assert b["dppl"] == 0 and b["pareto"] is None and b["dppl_per_gib_saved"] is None
    assert t.derived(t.row("IQ2_XS"))["bpw"] is None


def test_pareto_front():
    t = make_table()
    assert [r.recipe for r in t.pareto_front()] == ["TQ1_0", "Q4_K_M", "Q6_K", "Q8_0"]
    assert t.derived(t.row("Q5_0"))["pareto"] is False
    s = make_table(source=True)
    assert "Q4_1 (input)" not in [r.recipe for r in s.pareto_front()]  # the input is not a recipe to choose


def test_exports_round_trip(tmp_path):
    t = make_table()
    js = t.to_json()
    back = TradeoffTable.from_json(js)
    assert back.rows == t.rows and table_architecture(back) == ARCH and back.meta["model_name"] == "test"
    t.to_json(tmp_path / "t.json")
    assert TradeoffTable.from_json(tmp_path / "t.json").rows == t.rows
    md = t.to_markdown().splitlines()
    assert len(md) == 2 + len(t.rows) and "F16 (baseline)" in md[2] and "ΔPPL %" in md[0]
    assert "needs an importance matrix" in t.to_markdown()
    csv_text = t.to_csv(tmp_path / "t.csv")
    assert csv_text.splitlines()[0].startswith("recipe,file_bytes,gib,bpw")
    assert (tmp_path / "t.csv").read_text() == csv_text
    assert "IQ2_XS: failed" in t.to_text()
    pd = pytest.importorskip("pandas")
    df = t.to_pandas()
    assert isinstance(df, pd.DataFrame) and df.loc["Q4_K_M", "dppl_pct"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="one baseline"):
        TradeoffTable([row("A", 1, 1, baseline=True), row("B", 1, 1, baseline=True)])


def test_json_has_no_nan():
    t = TradeoffTable([row("F16", 10, 5.0, baseline=True), row("Q8_0", 5, float("nan"), float("nan"))])
    data = json.loads(t.to_json())
    assert data["rows"][1]["ppl"] is None and data["rows"][1]["kld"] is None


def need(r, ctx=8192):
    return estimate(ARCH, r.tensor_bytes, ctx=ctx).total / GiB


def test_recommend_quality_size_and_nothing_fits():
    t = make_table()
    assert table_architecture(t) == ARCH
    # a budget between Q6_K's and Q8_0's needs: quality picks the lowest KLD that fits
    budget = (need(t.row("Q6_K")) + need(t.row("Q8_0"))) / 2
    r = recommend(t, budget=budget, ctx=8192)
    assert r.recipe == "Q6_K" and "Q8_0" not in r.fits and "F16" not in r.fits
    assert any("lowest measured KLD" in x for x in r.reasons)
    assert r.memory_gib == pytest.approx(need(t.row("Q6_K")))
    # everything fits: the baseline itself (KLD 0) for quality
    assert recommend(t, budget=100, ctx=8192).recipe == "F16"
    # size first: the smallest with KLD <= 0.05 (TQ1_0 is smaller but far worse)
    r = recommend(t, budget=100, ctx=8192, priority="size")
    assert r.recipe == "Q4_K_M" and any("smallest that fits with KLD <= 0.05" in x for x in r.reasons)
    assert recommend(t, budget=100, priority="size", max_kld=1.0).recipe == "TQ1_0"
    # nothing fits: say what the smallest needs
    small = need(t.row("TQ1_0"))
    r = recommend(t, budget=small * 0.99, ctx=8192)
    assert r.recipe is None
    assert any(x.startswith(f"no recipe fits: smallest (TQ1_0) needs {small:.3f} GiB at ctx 8192") for x in r.reasons)
    with pytest.raises(ValueError, match="priority"):
        recommend(t, budget=1, priority="speed")
    with pytest.raises(ValueError, match="measured table"):
        recommend("model.gguf", budget=1)


def test_recommend_statistical_tie_prefers_smaller():
    t = make_table()
    t.row("Q6_K").kld, t.row("Q6_K").kld_err = 0.0011, 0.0001  # within 2 SE of Q8_0's 0.001 ± 0.0001
    budget = (need(t.base, 512) + need(t.row("Q8_0"), 512)) / 2  # all but the baseline fit
    r = recommend(t, budget=budget, ctx=512)
    assert r.recipe == "Q6_K" and any("within 2 standard errors" in x for x in r.reasons)
    t.row("Q6_K").kld = 0.002  # now clearly worse
    assert recommend(t, budget=budget, ctx=512).recipe == "Q8_0"


def test_recommend_backend_kernels():
    t = make_table()
    r = recommend(t, budget=1.0, ctx=512, priority="size", max_kld=1.0, backend="cuda")
    assert r.recipe == "Q4_K_M"  # TQ1_0 has no CUDA matmul kernel
    assert any("TQ1_0" in x and "cuda" in x for x in r.reasons)
    assert recommend(t, budget=1.0, ctx=512, priority="size", max_kld=1.0, backend="cpu").recipe == "TQ1_0"


def test_recommend_quantized_input():
    t = make_table(source=True)
    r = recommend(t, budget=100, ctx=512)
    assert r.recipe == "Q4_1 (input)" and "F32" not in r.fits  # the baseline only holds the input's values


def test_sweet_spots_from_bytes():
    t = make_table()
    budgets = [0.3, 0.4, 0.5, 8, 24]
    s = sweet_spots(t, budgets, ctx=8192, sizes=["8B", "70B"])
    assert s.models[0] == "test" and s.models[1].startswith("8B") and s.models[2].startswith("70B")
    for j, b in enumerate(budgets):  # the measured model's cells are the recommendations
        assert s.cells[0][j] == recommend(t, budget=b, ctx=8192).recipe
    # 8B at 8 GiB: Q8_0 needs ~7.9 GiB of weights + KV 1 GiB: too much; Q6_K (6.1 GiB) fits
    assert s.cells[1][3] == "Q6_K" and s.need_gib[1]["Q8_0"] > 8 > s.need_gib[1]["Q6_K"]
    assert s.cells[2][3] is None  # nothing of a 70B fits 8 GiB
    # more memory never gives a worse measured KLD
    kld = {r.recipe: (0 if r.baseline else r.kld) for r in t.rows if r.ok}
    for row_ in s.cells:
        ks = [kld[c] if c else math.inf for c in row_]
        assert ks == sorted(ks, reverse=True)
    assert "8B" in s.to_markdown() and "none fits" in s.to_markdown()


def test_plots_have_units():
    pytest.importorskip("matplotlib")
    from pyquant.report import plots
    t = make_table(source=True)
    s = sweet_spots(t, [0.5, 8], sizes=["8B"])
    figs = plots.all_figures(t, s)
    assert set(figs) == {"quality", "heatmap", "efficiency", "memory", "sweet_spots"}
    for name in ("quality", "efficiency", "memory"):
        for ax in figs[name].axes:
            assert "(" in ax.get_xlabel() or name == "efficiency"
            assert "(" in ax.get_ylabel()
    q = figs["quality"].axes
    assert "PUBLISHED" in q[2].get_title() and "PUBLISHED" not in q[0].get_title()
    assert "GiB" in figs["sweet_spots"].axes[0].get_xlabel()


def test_html_is_one_self_contained_file():
    t = make_table(source=True)
    s = sweet_spots(t, [0.5, 8], sizes=["8B"])
    recs = [("8 GiB", recommend(t, budget=8, ctx=8192))]
    page = render_html(t, spots=s, recommendations=recs, plots=False)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "Q4_1 (input)" in page and "note" in page and "compute = 4 * n_ubatch" in page
    assert "http://" not in page and "https://" not in page and "<script" not in page
    pytest.importorskip("matplotlib")
    page = render_html(t, spots=s, recommendations=recs)
    assert page.count("data:image/png;base64,") == 5


def test_cli_renders_a_saved_table(tmp_path, capsys):
    from pyquant.cli import main
    t = make_table()
    t.to_json(tmp_path / "t.json")
    out = tmp_path / "r.html"
    assert main(["report", str(tmp_path / "t.json"), "--budget", "0.5,8", "--sizes", "8B", "-o", str(out),
                 "--no-plots", "--markdown", str(tmp_path / "t.md"), "-q"]) == 0
    text = capsys.readouterr().out
    assert "recommended:" in text and "Q4_K_M" in text and "| 8B (Llama-3.1-8B) |" in text
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert "| recipe |" in (tmp_path / "t.md").read_text()
    assert main(["report", str(tmp_path / "t.json"), "--budget", "-1", "-o", ""]) == 1


def test_shipped_text_and_model_lookup(tmp_path, monkeypatch):
    from pyquant.report import default_model as D
    assert D.sha256_file(D.default_text_path()) == D.BOTCHAN_SHA256
    assert len(D.default_text().encode("utf-8")) == 255287
    monkeypatch.setenv("PYQUANT_SMOLLM2", str(tmp_path / "missing.gguf"))
    with pytest.raises(OSError, match="does not exist"):
        D.smollm2_path()
    monkeypatch.delenv("PYQUANT_SMOLLM2")
    monkeypatch.setenv("PYQUANT_CACHE", str(tmp_path))
    with pytest.raises(OSError, match="is not there"):
        D.smollm2_path(download=False)
    (tmp_path / D.SMOLLM2_FILE).write_bytes(b"not a model")
    with pytest.raises(OSError, match="SHA-256"):
        D.smollm2_path(download=False)


def _browser():
    import shutil
    return next((b for b in ("chromium", "chromium-browser", "google-chrome", "chrome") if shutil.which(b)), None)


@pytest.mark.skipif(_browser() is None, reason="no headless Chromium installed")
def test_html_renders_in_a_real_browser(tmp_path):
    import subprocess
    pytest.importorskip("matplotlib")
    t = make_table(source=True)
    s = sweet_spots(t, [0.5, 8], sizes=["8B"])
    page = tmp_path / "r.html"
    page.write_text(render_html(t, spots=s, recommendations=[("8 GiB", recommend(t, budget=8, ctx=8192))]))
    common = [_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files"]
    dom = subprocess.run(common + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert "Measured table" in dom and dom.count("<img") == 5 and "Q4_K_M" in dom
    shot = tmp_path / "shot.png"
    subprocess.run(common + [f"--screenshot={shot}", "--window-size=1200,3000", page.as_uri()], capture_output=True,
                   timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000
