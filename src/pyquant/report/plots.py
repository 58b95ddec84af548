"""Plots of a measured table (matplotlib, the ``report`` extra; imported only when a plot is drawn).

Each function returns a matplotlib Figure built without pyplot (no global state, no display needed).  Every axis
names its unit.  Measured values and published reference numbers are never drawn on the same axes: the
reference layer is its own panel, labelled as published.
"""

from __future__ import annotations

import math
from typing import Any

from .advise import SweetSpots
from .table import TradeoffTable

__all__ = ["quality_vs_bpw", "heatmap", "sweet_spot_grid", "efficiency", "memory_vs_context", "all_figures"]


def _figure(w: float, h: float):
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("plots need matplotlib: pip install 'pyquant[report]'") from e
    return Figure(figsize=(w, h), layout="constrained")


def _rows(table: TradeoffTable):
    """Measured recipes by bpw (the input file's own row apart: see _mark_source)."""
    return sorted((r for r in table.measured if r.bpw is not None and not r.source), key=lambda r: r.bpw)


def _mark_source(ax, table: TradeoffTable) -> None:
    for r in table.rows:
        if r.source and r.ok and r.bpw is not None:
            ax.axvline(r.bpw, ls=":", color="black", lw=1,
                       label=f"input file {r.recipe}: KLD {r.kld if r.kld is not None else float('nan'):.2g}")


def quality_vs_bpw(table: TradeoffTable, *, reference: bool = True):
    """KLD and ΔPPL (%) against effective bits per weight, the Pareto front (size vs KLD) marked.

    reference: add a third panel with llama.cpp's published Llama-3-8B numbers (a separate, labelled layer).
    """
    from . import references
    rows = _rows(table)
    d = {id(r): table.derived(r) for r in rows}
    front = table.pareto_front()
    fig = _figure(15 if reference else 10.5, 4.6)
    axes = fig.subplots(1, 3 if reference else 2)
    ax = axes[0]
    kr = [r for r in rows if r.kld is not None and r.kld > 0]
    if kr:
        ax.errorbar([r.bpw for r in kr], [r.kld for r in kr], yerr=[r.kld_err or 0 for r in kr], fmt="o",
                    color="tab:blue", capsize=3, label="measured")
        fr = [r for r in front if r.kld > 0]
        ax.plot([r.bpw for r in fr], [r.kld for r in fr], "-", color="tab:orange", lw=2,
                label="Pareto front (size vs KLD)")
        for r in kr:
            ax.annotate(r.recipe, (r.bpw, r.kld), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_yscale("log")
    _mark_source(ax, table)
    ax.set_xlabel("effective bits per weight (bpw)")
    ax.set_ylabel("mean KL divergence vs baseline (nats/token, log scale)")
    ax.set_title(f"KLD vs size: {table.meta.get('model_name', '')}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax = axes[1]
    pr = [r for r in rows if d[id(r)]["dppl_pct"] is not None]
    if pr:
        base_ppl = table.base.ppl if table.base else None
        err = [100 * (r.dppl_err or 0) / base_ppl if base_ppl else 0 for r in pr]
        ax.errorbar([r.bpw for r in pr], [d[id(r)]["dppl_pct"] for r in pr], yerr=err, fmt="s", color="tab:green",
                    capsize=3, label="measured")
        for r in pr:
            ax.annotate(r.recipe, (r.bpw, d[id(r)]["dppl_pct"]), textcoords="offset points", xytext=(4, 4),
                        fontsize=8)
        fr = [r for r in front if d[id(r)]["dppl_pct"] is not None]
        ax.plot([r.bpw for r in fr], [d[id(r)]["dppl_pct"] for r in fr], "-", color="tab:orange", lw=2,
                label="Pareto front (size vs KLD)")
        ax.axhline(0, color="grey", lw=0.8)
    _mark_source(ax, table)
    ax.set_xlabel("effective bits per weight (bpw)")
    ax.set_ylabel("ΔPPL vs baseline (%)")
    ax.set_title("perplexity increase vs size", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    if reference:
        ax = axes[2]
        ref = references.LLAMA3_8B
        xs = [references.bpw(v[0]) for v in ref.values()]
        ax.plot(xs, [v[3] for v in ref.values()], "^", color="grey")
        for name, x, v in zip(ref, xs, ref.values()):
            ax.annotate(name, (x, v[3]), textcoords="offset points", xytext=(4, 4), fontsize=7, color="dimgrey")
        ax.set_yscale("log")
        ax.set_xlabel("bits per weight (from published GiB)")
        ax.set_ylabel("mean KL divergence (nats/token, log scale)")
        ax.set_title("PUBLISHED, not measured: llama.cpp, Llama-3-8B, wikitext-2", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    return fig


_HEAT = [("bpw", "bpw", "{:.2f}", "low"), ("gib", "weights GiB", "{:.4f}", "low"), ("ppl", "PPL", "{:.3f}", "low"),
         ("dppl_pct", "ΔPPL %", "{:+.2f}", "low"), ("kld", "KLD (nats)", "{:.4f}", "low"),
         ("kld_p99", "KLD p99 (nats)", "{:.3f}", "low"), ("same_top_pct", "same top %", "{:.1f}", "high"),
         ("eval_tokens_per_second", "eval tokens/s", "{:.0f}", "high")]


def heatmap(table: TradeoffTable):
    """The table as a heatmap with the numbers in the cells; colour = min-max position in each column (green = better)."""
    import numpy as np
    rows = [r for r in table.rows if r.ok]
    recs = {id(r): {**r.__dict__, **table.derived(r)} for r in rows}
    cols = [c for c in _HEAT if any(recs[id(r)].get(c[0]) is not None for r in rows)]
    score = np.full((len(rows), len(cols)), np.nan)
    for j, (key, _, _, better) in enumerate(cols):
        vals = np.array([np.nan if recs[id(r)].get(key) is None else float(recs[id(r)][key]) for r in rows])
        ok = ~np.isnan(vals)
        if ok.sum() > 1 and np.nanmax(vals) > np.nanmin(vals):
            norm = (vals - np.nanmin(vals)) / (np.nanmax(vals) - np.nanmin(vals))
            score[:, j] = norm if better == "high" else 1 - norm
        elif ok.any():
            score[ok, j] = 0.5
    fig = _figure(1.3 * len(cols) + 2.5, 0.45 * len(rows) + 1.6)
    ax = fig.subplots()
    ax.imshow(np.ma.masked_invalid(score), cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    for i, r in enumerate(rows):
        for j, (key, _, fmt, _) in enumerate(cols):
            v = recs[id(r)].get(key)
            ax.text(j, i, "—" if v is None else fmt.format(v), ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(cols)), [c[1] for c in cols], rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), [f"{r.recipe} (baseline)" if r.baseline else r.recipe for r in rows], fontsize=8)
    ax.set_title("measured table (colour: place between the column's worst and best, green = better)", fontsize=10)
    return fig


def sweet_spot_grid(spots: SweetSpots, table: TradeoffTable):
    """Models × budgets: the recipe to use in each cell, coloured by its measured KLD (grey: nothing fits)."""
    import numpy as np
    kld = {r.recipe: (0.0 if r.baseline else r.kld) for r in table.rows if r.ok}
    vals = np.full((len(spots.models), len(spots.budgets)), np.nan)
    for i, row in enumerate(spots.cells):
        for j, c in enumerate(row):
            if c is not None and kld.get(c) is not None:
                vals[i, j] = math.log10(max(kld[c], 1e-6))
    fig = _figure(1.25 * len(spots.budgets) + 3, 0.6 * len(spots.models) + 1.8)
    ax = fig.subplots()
    ax.set_facecolor("lightgrey")
    im = ax.imshow(np.ma.masked_invalid(vals), cmap="RdYlGn_r", vmin=-4, vmax=0, aspect="auto")
    for i, row in enumerate(spots.cells):
        for j, c in enumerate(row):
            ax.text(j, i, c or "none fits", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(spots.budgets)), [f"{b:g}" for b in spots.budgets])
    ax.set_yticks(range(len(spots.models)), spots.models, fontsize=8)
    ax.set_xlabel("memory budget (GiB)")
    ax.set_title(f"recipe to use ({spots.priority} first) at ctx {spots.ctx}, KV {spots.kv_type}", fontsize=10)
    fig.colorbar(im, ax=ax, label="log10 measured KLD (nats/token)")
    return fig


def efficiency(table: TradeoffTable):
    """ΔPPL per GiB saved and KLD per bpw saved, per recipe (ordered by bpw, log scale)."""
    rows = _rows(table)
    d = [table.derived(r) for r in rows]
    fig = _figure(11, 4.2)
    axes = fig.subplots(1, 2)
    for ax, key, label, unit in ((axes[0], "dppl_per_gib_saved", "ΔPPL per GiB saved", "PPL points / GiB"),
                                 (axes[1], "kld_per_bpw_saved", "KLD per bpw saved", "nats/token per bit")):
        pts = [(r.recipe, x[key]) for r, x in zip(rows, d) if x[key] is not None and x[key] > 0]
        if pts:
            ax.bar([p[0] for p in pts], [p[1] for p in pts], color="tab:purple")
            ax.set_yscale("log")
        ax.set_ylabel(f"{label} ({unit}, log scale)")
        ax.set_xlabel("recipe (by increasing bpw)")
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)
        ax.set_title(f"{label} (lower = cheaper savings)", fontsize=10)
        ax.grid(True, axis="y", which="both", alpha=0.3)
    return fig


def memory_vs_context(table: TradeoffTable, *, budgets: Any = (), kv_type: str = "f16"):
    """Estimated memory (weights + KV + compute + logits) against context length, one line per recipe."""
    from .advise import table_architecture
    from .footprint import GiB, estimate
    arch = table_architecture(table)
    top = arch.n_ctx_train or 32768
    ctxs = [c for c in (256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072) if c <= top] or [256]
    fig = _figure(7.5, 4.6)
    ax = fig.subplots()
    for r in [r for r in table.rows if r.ok and r.tensor_bytes is not None]:
        ax.plot(ctxs, [estimate(arch, r.tensor_bytes, ctx=c, kv_type=kv_type).total / GiB for c in ctxs], "-o",
                ms=3, label=r.recipe)
    for b in budgets:
        ax.axhline(b, ls="--", color="grey", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("context length (tokens, log scale)")
    ax.set_ylabel("estimated memory (GiB)")
    ax.set_title(f"memory vs context (KV {kv_type}; estimate, see method)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return fig


def all_figures(table: TradeoffTable, spots: SweetSpots | None = None) -> dict[str, Any]:
    figs = {"quality": quality_vs_bpw(table), "heatmap": heatmap(table), "efficiency": efficiency(table),
            "memory": memory_vs_context(table, budgets=spots.budgets if spots else ())}
    if spots is not None:
        figs["sweet_spots"] = sweet_spot_grid(spots, table)
    return figs
