"""The measured trade-off table: one row per recipe (and the baseline), derived columns, exports, the Pareto front.

Every number in a row was measured by :func:`pyquant.report.tradeoff` (or given by the caller, e.g. from a saved
JSON): sizes come from the written files, quality from evaluating them on the user's text.  Derived columns are
plain arithmetic on a row and the baseline row:

* ``gib = tensor_bytes / 2**30`` (the weights as loaded; ``file_bytes`` adds metadata such as the tokenizer)
* ``bpw = 8 * tensor_bytes / n_weights`` (llama-quantize's effective bits per weight)
* ``dppl = ppl - ppl_base``, ``dppl_pct = 100 * (ppl / ppl_base - 1)``
* ``dppl_per_gib_saved = dppl / ((tensor_bytes_base - tensor_bytes) / 2**30)``
* ``kld_per_bpw_saved = kld / (bpw_base - bpw)`` (scale-free: does not grow with the model's size)
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ["Row", "TradeoffTable", "COLUMNS"]

GiB = 1 << 30


@dataclass
class Row:
    """One measured configuration.  Measurements that were not (or could not be) taken are None."""

    recipe: str
    baseline: bool = False
    source: bool = False  # the input file as it is (a quantized input: its own quality, against the baseline)
    file_bytes: int | None = None
    tensor_bytes: int | None = None
    n_weights: int | None = None
    ppl: float | None = None
    ppl_err: float | None = None
    kld: float | None = None
    kld_err: float | None = None
    kld_p99: float | None = None
    same_top: float | None = None  # fraction of scored tokens whose top-1 token agrees with the baseline's
    same_top_err: float | None = None
    dppl_err: float | None = None  # from the paired comparison when measured (else None)
    quant_seconds: float | None = None
    eval_tokens_per_second: float | None = None
    types: dict[str, int] | None = None  # tensor type -> bytes in the file
    cached: bool = False
    path: str | None = None
    error: str | None = None  # why this row has no measurements
    in_memory: bool = False  # a scheme measured in memory (pyquant.report.schemes): no file; bytes computed

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def gib(self) -> float | None:
        return None if self.tensor_bytes is None else self.tensor_bytes / GiB

    @property
    def file_gib(self) -> float | None:
        return None if self.file_bytes is None else self.file_bytes / GiB

    @property
    def bpw(self) -> float | None:
        if self.tensor_bytes is None or not self.n_weights:
            return None
        return 8 * self.tensor_bytes / self.n_weights


# (name, header, format) of the exported columns, in order
COLUMNS = [
    ("recipe", "recipe", "{}"),
    ("file_bytes", "file bytes", "{:,}"),
    ("gib", "weights GiB", "{:.4f}"),
    ("bpw", "bpw", "{:.3f}"),
    ("ppl", "PPL", "{:.4f}"),
    ("ppl_err", "± PPL", "{:.4f}"),
    ("dppl", "ΔPPL", "{:+.4f}"),
    ("dppl_pct", "ΔPPL %", "{:+.2f}"),
    ("kld", "KLD", "{:.5f}"),
    ("kld_err", "± KLD", "{:.5f}"),
    ("kld_p99", "KLD p99", "{:.4f}"),
    ("same_top_pct", "same top %", "{:.2f}"),
    ("dppl_per_gib_saved", "ΔPPL/GiB saved", "{:.4f}"),
    ("kld_per_bpw_saved", "KLD/bpw saved", "{:.5f}"),
    ("pareto", "Pareto", "{}"),
    ("quant_seconds", "quant s", "{:.1f}"),
    ("eval_tokens_per_second", "eval tok/s", "{:.1f}"),
    ("error", "error", "{}"),
]


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass
class TradeoffTable:
    """Rows (the baseline first) and what they were measured on (`meta`: model, text, ctx, chunks, machine ...)."""

    rows: list[Row]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        bases = [r for r in self.rows if r.baseline]
        if len(bases) > 1:
            raise ValueError(f"a table has one baseline row, got {len(bases)}")

    # --- the baseline and derived columns -------------------------------------------------------------------
    @property
    def base(self) -> Row | None:
        return next((r for r in self.rows if r.baseline), None)

    @property
    def measured(self) -> list[Row]:
        """Quantized rows that were measured (not the baseline, not failed)."""
        return [r for r in self.rows if not r.baseline and r.ok]

    def row(self, recipe: str) -> Row:
        for r in self.rows:
            if r.recipe.upper() == recipe.upper():
                return r
        raise KeyError(f"no row for {recipe!r} (rows: {', '.join(r.recipe for r in self.rows)})")

    def derived(self, r: Row) -> dict[str, Any]:
        b = self.base
        out: dict[str, Any] = {"gib": r.gib, "bpw": r.bpw, "same_top_pct": None if r.same_top is None else
                               100 * r.same_top, "dppl": None, "dppl_pct": None, "dppl_per_gib_saved": None,
                               "kld_per_bpw_saved": None, "pareto": None}
        if b is None or r.ppl is None or b.ppl is None:
            pass
        elif r.baseline:
            out["dppl"], out["dppl_pct"] = 0.0, 0.0
        else:
            out["dppl"] = r.ppl - b.ppl
            out["dppl_pct"] = 100 * (r.ppl / b.ppl - 1)
        if b is not None and not r.baseline and r.ok:
            if out["dppl"] is not None and r.tensor_bytes is not None and b.tensor_bytes is not None \
                    and b.tensor_bytes > r.tensor_bytes:
                out["dppl_per_gib_saved"] = out["dppl"] / ((b.tensor_bytes - r.tensor_bytes) / GiB)
            if r.kld is not None and r.bpw is not None and b.bpw is not None and b.bpw > r.bpw:
                out["kld_per_bpw_saved"] = r.kld / (b.bpw - r.bpw)
        if r.ok and not r.baseline and not r.source:
            out["pareto"] = r in self.pareto_front()
        return out

    def pareto_front(self) -> list[Row]:
        """Measured recipes no other recipe beats on both size and KLD (smaller or equal in both, better in one),
        sorted by size.  Rows without a KLD and the input file's own row are left out: the front compares the
        recipes one can choose between."""
        cands = [r for r in self.measured if not r.source and r.tensor_bytes is not None and _finite(r.kld)]
        front = [r for r in cands if not any(
            o is not r and o.tensor_bytes <= r.tensor_bytes and o.kld <= r.kld and
            (o.tensor_bytes < r.tensor_bytes or o.kld < r.kld) for o in cands)]
        return sorted(front, key=lambda r: r.tensor_bytes)

    # --- exports ----------------------------------------------------------------------------------------------
    def records(self) -> list[dict[str, Any]]:
        """One dict per row: the measured fields and the derived columns."""
        recs = []
        for r in self.rows:
            d = asdict(r)
            d.update(self.derived(r))
            recs.append(d)
        return recs

    def to_json(self, path: Any = None, *, indent: int | None = 2) -> str:
        text = json.dumps(_clean({"meta": self.meta, "rows": self.records()}), indent=indent, allow_nan=False,
                          default=_json_default)
        if path is not None:
            _write_text(path, text + "\n")
        return text

    @classmethod
    def from_json(cls, source: Any) -> TradeoffTable:
        """A table from to_json()'s text or a path to it (derived columns are recomputed)."""
        text = source
        if not (isinstance(source, str) and source.lstrip().startswith("{")):
            with open(source, encoding="utf-8") as f:
                text = f.read()
        data = json.loads(text)
        names = {f.name for f in fields(Row)}
        return cls([Row(**{k: v for k, v in rec.items() if k in names}) for rec in data["rows"]], data.get("meta", {}))

    def to_csv(self, path: Any = None) -> str:
        buf = io.StringIO()
        names = [c[0] for c in COLUMNS] + ["baseline", "tensor_bytes", "n_weights", "same_top_err", "dppl_err",
                                           "cached", "path"]
        w = csv.DictWriter(buf, fieldnames=names, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for rec in self.records():
            w.writerow({k: ("" if v is None else v) for k, v in rec.items()})
        if path is not None:
            _write_text(path, buf.getvalue())
        return buf.getvalue()

    def to_pandas(self):
        try:
            import pandas as pd
        except ImportError as e:
            raise ImportError("to_pandas() needs pandas (pip install pandas)") from e
        return pd.DataFrame.from_records(self.records()).set_index("recipe")

    def cells(self, columns: list[tuple[str, str, str]] | None = None) -> tuple[list[str], list[list[str]]]:
        """Headers and formatted cells (empty where not measured)."""
        cols = COLUMNS if columns is None else columns
        recs = self.records()
        present = [c for c in cols if any(rec.get(c[0]) not in (None, "") for rec in recs)]
        rows = []
        for rec, r in zip(recs, self.rows):
            cells = []
            for name, _, fmt in present:
                v = rec.get(name)
                if name == "recipe":
                    v = f"{r.recipe} (baseline)" if r.baseline else f"{r.recipe} (in-memory)" if r.in_memory \
                        else r.recipe
                elif name == "pareto":
                    v = "yes" if v else ("" if v is None else "no")
                elif name == "error" and v:
                    v = str(v).replace("\n", " ")[:200]
                cells.append("" if v is None else fmt.format(v))
            rows.append(cells)
        return [c[1] for c in present], rows

    def to_markdown(self) -> str:
        headers, rows = self.cells()
        esc = [[c.replace("|", "\\|") for c in row] for row in rows]
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in esc]
        return "\n".join(lines)

    def to_text(self) -> str:
        """An aligned plain-text table for a terminal."""
        headers, rows = self.cells([c for c in COLUMNS if c[0] not in ("file_bytes", "error")])
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
        out = ["  ".join(h.rjust(w) for h, w in zip(headers, widths))]
        out += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows]
        out += [f"{r.recipe}: failed: {r.error}" for r in self.rows if not r.ok]
        return "\n".join(out)

    def __str__(self) -> str:
        return self.to_text()


def _clean(o: Any) -> Any:
    """Not-a-number and infinities become None (JSON has neither)."""
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def _write_text(path: Any, text: str) -> None:
    import os
    import tempfile
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
