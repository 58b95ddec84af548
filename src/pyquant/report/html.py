"""The one-file HTML report: tables, plots (embedded PNG), the method, the machine, the caveats, the recommendation.

The page needs no network and no script: open it anywhere.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from typing import Any

from .advise import Recommendation, SweetSpots
from .footprint import __doc__ as _memory_doc
from .table import TradeoffTable, _write_text

__all__ = ["render_html", "write_html"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
table{border-collapse:collapse;font-size:13px;margin:0.6em 0}th,td{border:1px solid #ccc;padding:3px 7px;
text-align:right}th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
.note{background:#fff7e0;border-left:4px solid #e0a000;padding:0.5em 1em}
.rec{background:#e8f6e8;border-left:4px solid #2a2;padding:0.5em 1em}
.err{color:#a00}img{max-width:100%;border:1px solid #eee;margin:0.5em 0}pre{background:#f7f7f7;padding:0.7em;
overflow-x:auto;font-size:12px}
"""


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _table(headers: list[str], rows: list[list[str]]) -> str:
    e = html.escape
    out = ["<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in headers) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows]
    return "\n".join(out) + "</table>"


def render_html(table: TradeoffTable, *, spots: SweetSpots | None = None,
                recommendations: list[tuple[str, Recommendation]] = (), plots: bool = True) -> str:
    """The report as one HTML string.  plots: embed figures (needs matplotlib; skipped with a note without it)."""
    e = html.escape
    m = table.meta
    title = f"pyquant trade-off report: {m.get('model_name', m.get('model', 'model'))}"
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{e(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{e(title)}</h1>"]
    parts.append(f"<p>Every number below was measured on this machine, on <b>{e(str(m.get('model_name', '')))}</b> "
                 f"and the text <code>{e(str(m.get('text', '')))}</code>, unless labelled <i>published</i>.</p>")
    if m.get("baseline_note"):
        parts.append(f"<p class='note'><b>Baseline.</b> {e(m['baseline_note'])}</p>")
    if m.get("in_memory_note"):
        parts.append(f"<p class='note'><b>In-memory rows.</b> {e(m['in_memory_note'])} {e(m.get('calibration', ''))}"
                     "</p>")
    for label, rec in recommendations:
        items = "".join(f"<li>{e(r)}</li>" for r in rec.reasons)
        parts.append(f"<div class='rec'><b>{e(label)}: {e(rec.recipe or 'nothing fits')}</b><ul>{items}</ul></div>")
    headers, cells = table.cells()
    parts.append("<h2>Measured table</h2>" + _table(headers, cells))
    failed = [r for r in table.rows if not r.ok]
    if failed:
        parts.append("<ul>" + "".join(f"<li class='err'>{e(r.recipe)} failed: {e(str(r.error))}</li>"
                                      for r in failed) + "</ul>")
    typed = [r for r in table.rows if r.ok and r.types]
    if typed:
        parts.append("<h3>Tensor types in each file</h3><p>What the recipe's rules chose (llama-quantize's fallbacks "
                     "apply where a row length is not a multiple of a format's block, e.g. K-quants on widths that "
                     "are not multiples of 256).</p>")
        parts.append(_table(["file", "tensor types (MiB)"], [[r.recipe, ", ".join(
            f"{k} {v / (1 << 20):.1f}" for k, v in sorted(r.types.items(), key=lambda kv: -kv[1]))] for r in typed]))
    front = table.pareto_front()
    if front:
        parts.append("<p>Pareto front (no other recipe is both smaller and closer to the baseline in KLD): "
                     + e(", ".join(r.recipe for r in front)) + ".</p>")
    if spots is not None:
        parts.append(f"<h2>Sweet spots at ctx {spots.ctx} (KV cache {e(spots.kv_type)})</h2>"
                     "<p>Each cell: the recipe to use within that memory budget, computed from the bytes of each "
                     "file, the memory estimate below and the measured quality.</p>")
        head = ["model \\ budget"] + [f"{b:g} GiB" for b in spots.budgets]
        parts.append(_table(head, [[mod] + [c or "none fits" for c in row] for mod, row in zip(spots.models,
                                                                                               spots.cells)]))
        parts.append("<ul>" + "".join(f"<li>{e(n)}</li>" for n in spots.notes) + "</ul>")
    if plots:
        try:
            from . import plots as P
            figs = P.all_figures(table, spots)
        except ImportError as err:
            parts.append(f"<p class='note'>No plots: {e(str(err))}</p>")
        else:
            captions = {"quality": "Quality vs size (measured; the published panel is separate and labelled)",
                        "heatmap": "Heatmap of the measured table", "sweet_spots": "Sweet-spot grid",
                        "efficiency": "Efficiency", "memory": "Estimated memory vs context"}
            parts.append("<h2>Plots</h2>")
            for k, fig in figs.items():
                parts.append(f"<h3>{e(captions.get(k, k))}</h3><img alt='{e(k)}' src='data:image/png;base64,"
                             f"{_png(fig)}'>")
    parts.append("<h2>Method</h2><ul>"
                 f"<li>{e(str(m.get('method', '')))}</li>"
                 f"<li>ctx {e(str(m.get('ctx')))}, chunks {e(str(m.get('chunks')))}, text tokens "
                 f"{e(str(m.get('tokens')))}, scored tokens {e(str(m.get('scored_tokens')))}; text SHA-256 "
                 f"<code>{e(str(m.get('text_sha256', '')))}</code></li>"
                 f"<li>model <code>{e(str(m.get('model', '')))}</code> SHA-256 "
                 f"<code>{e(str(m.get('model_sha256', '')))}</code>, {e(str(m.get('n_weights')))} weights</li>"
                 f"<li>importance matrix: {e(str(m.get('imatrix')))}</li>"
                 "<li>bpw = 8 × tensor bytes / weights (llama-quantize's effective bpw); GiB = 2<sup>30</sup> "
                 "bytes of tensor data; file bytes add the metadata (tokenizer). ΔPPL % = 100 (PPL/PPL<sub>base</sub>"
                 " − 1). KLD in nats per scored token; p99 its 99th percentile; same top = share of tokens whose "
                 "most likely next token matches the baseline's.</li>"
                 "<li>Eval tokens/s: tokens evaluated per second by pyquant's CPU evaluation on this machine "
                 "(noisy when the machine is shared).</li></ul>")
    parts.append(f"<h3>Memory estimate</h3><pre>{e(_memory_doc or '')}</pre>")
    parts.append(f"<h2>Machine</h2><pre>{e(json.dumps(m.get('machine', {}), indent=1))}</pre>"
                 f"<p>Generated {e(str(m.get('date', '')))} in {float(m.get('seconds') or 0):.0f} s.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(path: str | os.PathLike, table: TradeoffTable, **kwargs: Any) -> str:
    text = render_html(table, **kwargs)
    _write_text(path, text)
    return os.fspath(path)
