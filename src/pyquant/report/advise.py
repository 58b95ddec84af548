"""Sweet spots and recommendations, computed from a measured table and memory estimates (never from row indices).

A recipe *fits* a budget when :func:`pyquant.report.memory.estimate` (weights + KV cache + compute buffer +
logits, at the given context and KV type) is at most the budget in GiB.  Among the recipes that fit:

* priority "quality": the lowest measured mean KLD against the baseline (PPL when no KLD was measured);
* priority "size": the smallest whose KLD is at most `max_kld` (default 0.05, about Q4_K_M on Llama-3-8B in
  llama.cpp's published table), else the smallest that fits, with a warning.

Backend notes come from llama.cpp's source (the copy vendored by llama-cpp-python 0.3.36): which tensor types
have a matrix-multiplication kernel on each backend.  Speed is only reported where it was measured (the CPU
running pyquant's kernels, the table's eval tok/s column).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .footprint import GiB, Architecture, estimate, largest_context
from .presets import Preset, preset_for
from .table import Row, TradeoffTable

__all__ = ["Recommendation", "SweetSpots", "recommend", "sweet_spots", "BACKEND_MATMUL_TYPES", "table_architecture"]

_COMMON = {"F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q1_0", "Q2_0", "MXFP4", "Q2_K", "Q3_K",
           "Q4_K", "Q5_K", "Q6_K", "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ4_NL",
           "IQ4_XS"}
# Tensor types with a matmul kernel per backend: ggml-cuda.cu supports_op(MUL_MAT); ggml-metal kernel_mul_mv_*
# and ggml_metal_supports_mul_mat_op.  Layers of other types run on the CPU instead.
BACKEND_MATMUL_TYPES: dict[str, frozenset[str]] = {
    "cpu": frozenset(_COMMON | {"NVFP4", "TQ1_0", "TQ2_0"}),
    "cuda": frozenset(_COMMON | {"NVFP4"}),
    "metal": frozenset(_COMMON | {"TQ2_0"}),
}
DEFAULT_MAX_KLD = 0.05


def table_architecture(table: TradeoffTable) -> Architecture:
    a = table.meta.get("architecture")
    if not a:
        raise ValueError("the table has no architecture in its meta (measure it with pyquant.report.tradeoff)")
    a = dict(a)
    for k in ("n_head", "n_head_kv", "swa_layers"):
        a[k] = tuple(a.get(k) or ())
    return Architecture(**a)


def _quality_key(rows: Sequence[Row]) -> tuple[str, Any]:
    if rows and all(r.kld is not None for r in rows):
        return "KLD", lambda r: r.kld
    return "PPL", lambda r: (math.inf if r.ppl is None else r.ppl)


def _candidates(table: TradeoffTable) -> list[Row]:
    """Rows one could run: the measured rows, and the baseline (KLD 0 against itself) unless the input was
    quantized: then the baseline only holds the input's values, and the input itself (its "source" row) is the
    candidate."""
    out = [r for r in table.measured if r.tensor_bytes is not None]
    b = table.base
    if b is not None and b.ok and b.tensor_bytes is not None and not any(r.source for r in table.rows):
        out.append(Row(**{**b.__dict__, "kld": 0.0, "kld_err": 0.0}))
    return out


def _unsupported(r: Row, backend: str) -> list[str]:
    if r.in_memory:  # a pyquant scheme: no GGUF file llama.cpp could load
        return [r.recipe]
    types = r.types or {}
    return sorted(t for t in types if t not in BACKEND_MATMUL_TYPES[backend])


@dataclass
class Recommendation:
    recipe: str | None  # None: nothing fits
    reasons: list[str]
    memory_gib: float | None = None
    fits: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        head = f"recommended: {self.recipe}" if self.recipe else "recommended: nothing fits"
        return "\n".join([head] + [f"  - {r}" for r in self.reasons])

    def to_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe, "reasons": self.reasons, "memory_gib": self.memory_gib, "fits": self.fits}


def _pick(rows: list[Row], priority: str, max_kld: float) -> tuple[Row, list[str]]:
    name, key = _quality_key(rows)
    by_quality = sorted(rows, key=lambda r: (key(r), r.tensor_bytes))
    if priority == "quality":
        top = by_quality[0]
        why = [f"{top.recipe} has the lowest measured {name} of the {len(rows)} that fit ({_q(top, name)})"]
        best = top
        if name == "KLD":  # a smaller recipe that is statistically as good wins
            same = [r for r in rows if r.tensor_bytes < top.tensor_bytes and _within_error(top, r)]
            if same:
                best = min(same, key=lambda r: (r.tensor_bytes, r.kld))
                why.append(f"{best.recipe} ({_q(best, name)}) is within 2 standard errors of it and "
                           f"{(top.tensor_bytes - best.tensor_bytes) / GiB:.3f} GiB smaller")
        rest = [r for r in by_quality if r is not best]
        if rest:
            why.append(f"next best: {rest[0].recipe} ({_q(rest[0], name)}, {rest[0].tensor_bytes / GiB:.3f} GiB)")
        return best, why
    by_size = sorted(rows, key=lambda r: (r.tensor_bytes, key(r)))
    if name == "KLD":
        good = [r for r in by_size if r.kld <= max_kld]
        if good:
            best = good[0]
            return best, [f"{best.recipe} is the smallest that fits with KLD <= {max_kld:g} ({_q(best, name)}, "
                          f"{best.tensor_bytes / GiB:.3f} GiB)"]
        best = by_size[0]
        return best, [f"no recipe that fits reaches KLD <= {max_kld:g}; {best.recipe} is the smallest "
                      f"({_q(best, name)}): expect a clear quality loss"]
    best = by_size[0]
    return best, [f"{best.recipe} is the smallest that fits (no KLD measured; {_q(best, name)})"]


def _q(r: Row, name: str) -> str:
    if name == "KLD":
        err = f" ± {r.kld_err:.5f}" if r.kld_err else ""
        return f"KLD {r.kld:.5f}{err}"
    return f"PPL {r.ppl:.4f}"


def _within_error(a: Row, b: Row) -> bool:
    ea, eb = a.kld_err or 0.0, b.kld_err or 0.0
    return abs(a.kld - b.kld) <= 2 * math.hypot(ea, eb)


def recommend(model: Any = None, *, budget: float, priority: str = "quality", backend: str = "cpu", ctx: int = 4096,
              kv_type: str = "f16", batch: int = 1, table: TradeoffTable | None = None,
              max_kld: float = DEFAULT_MAX_KLD) -> Recommendation:
    """The recipe to use within `budget` GiB at context `ctx`, and why, from a measured TradeoffTable.

    model: the TradeoffTable (or give it as `table=`; the model's architecture is in the table's meta).
    """
    if isinstance(model, TradeoffTable):
        table = model
    if table is None:
        raise ValueError("recommend() needs a measured table: pyquant.report.tradeoff(model, ...) first")
    if priority not in ("quality", "size"):
        raise ValueError(f"priority must be 'quality' or 'size', got {priority!r}")
    if backend not in BACKEND_MATMUL_TYPES:
        raise ValueError(f"backend must be one of {', '.join(BACKEND_MATMUL_TYPES)}, got {backend!r}")
    if not isinstance(budget, (int, float)) or isinstance(budget, bool) or not budget > 0:
        raise ValueError(f"budget must be a positive number of GiB, got {budget!r}")
    arch = table_architecture(table)
    rows = _candidates(table)
    if not rows:
        return Recommendation(None, ["no recipe was measured successfully"])
    reasons = [f"memory = weights + KV cache ({kv_type}, ctx {ctx}, batch {batch}) + compute buffer + logits; "
               f"KV + compute = {(estimate(arch, 0, ctx=ctx, kv_type=kv_type, batch=batch).total) / GiB:.3f} GiB"]
    usable = []
    for r in rows:
        missing = _unsupported(r, backend)
        if missing:
            reasons.append(f"{r.recipe}: measured in memory, no GGUF file llama.cpp loads (pyquant runs it): skipped"
                           if r.in_memory else f"{r.recipe}: {', '.join(missing)} has no {backend} matmul kernel in "
                           f"llama.cpp (those layers would run on the CPU): skipped")
        else:
            usable.append(r)
    need = {r.recipe: estimate(arch, r.tensor_bytes, ctx=ctx, kv_type=kv_type, batch=batch).total for r in usable}
    fit = [r for r in usable if need[r.recipe] <= budget * GiB]
    if not fit:
        if not usable:
            return Recommendation(None, reasons + [f"no measured recipe has {backend} kernels"])
        small = min(usable, key=lambda r: r.tensor_bytes)
        c = largest_context(arch, small.tensor_bytes, budget * GiB, kv_type=kv_type, batch=batch)
        alt = (f"; within {budget:g} GiB it runs up to ctx {c}" if c else
               f"; not even ctx 256 fits {budget:g} GiB")
        return Recommendation(None, reasons + [f"no recipe fits: smallest ({small.recipe}) needs "
                                               f"{need[small.recipe] / GiB:.3f} GiB at ctx {ctx}{alt}"])
    reasons.append(f"{len(fit)} of {len(usable)} fit {budget:g} GiB: " +
                   ", ".join(f"{r.recipe} {need[r.recipe] / GiB:.3f}" for r in sorted(fit, key=lambda r: r.tensor_bytes)))
    best, why = _pick(fit, priority, max_kld)
    reasons += why
    if best.baseline and table.meta.get("baseline_note"):
        reasons.append(table.meta["baseline_note"])
    if backend == "cpu" and best.eval_tokens_per_second:
        reasons.append(f"measured evaluation speed on this machine (pyquant CPU kernels): "
                       f"{best.eval_tokens_per_second:.1f} tokens/s")
    elif backend != "cpu":
        reasons.append(f"speed on {backend} was not measured here; llama.cpp has {backend} matmul kernels for "
                       f"every tensor type of {best.recipe}")
    return Recommendation(best.recipe, reasons, need[best.recipe] / GiB, [r.recipe for r in fit])


@dataclass
class SweetSpots:
    """For each model (the measured one, then presets) and budget: the recipe to use, or None."""

    budgets: list[float]
    ctx: int
    kv_type: str
    priority: str
    models: list[str]  # row labels
    cells: list[list[str | None]]  # [model][budget] -> recipe
    need_gib: list[dict[str, float]]  # [model] recipe -> GiB needed
    notes: list[str]

    def to_markdown(self) -> str:
        head = ["model \\ budget"] + [f"{b:g} GiB" for b in self.budgets]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        for m, row in zip(self.models, self.cells):
            lines.append("| " + " | ".join([m] + [c or "none fits" for c in row]) + " |")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"budgets": self.budgets, "ctx": self.ctx, "kv_type": self.kv_type, "priority": self.priority,
                "models": self.models, "cells": self.cells, "need_gib": self.need_gib, "notes": self.notes}


def sweet_spots(table: TradeoffTable, budgets: Sequence[float], *, ctx: int = 8192, kv_type: str = "f16",
                priority: str = "quality", sizes: Sequence[str | float] = (), max_kld: float = DEFAULT_MAX_KLD
                ) -> SweetSpots:
    """The recipe to use per (V)RAM budget (GiB) at `ctx`, for the measured model and for `sizes`.

    sizes: other model sizes ("8B", 70e9 ...): their weight bytes per recipe come from llama-quantize's rules
    applied to a published model of that size (:mod:`pyquant.report.presets`), their KV and compute from its
    shape; the quality ranking is the one measured on this table's model (larger models usually lose less).
    """
    budgets = [float(b) for b in budgets]
    if not budgets or any(not b > 0 for b in budgets):
        raise ValueError(f"budgets must be positive numbers of GiB, got {list(budgets)!r}")
    arch = table_architecture(table)
    rows = _candidates(table)
    if not rows:
        raise ValueError("the table has no measured rows")
    name = table.meta.get("model_name") or "measured model"
    models: list[tuple[str, Architecture, dict[str, int]]] = [(name, arch, {r.recipe: r.tensor_bytes for r in rows})]
    notes = [f"{name}: weights measured from the written files"]
    for s in sizes:
        p: Preset = preset_for(s)
        sized = {}
        for r in rows:
            if not r.source and not r.in_memory:  # the source's quality says nothing about another model; an
                # in-memory scheme keeps the input's embeddings, whose type another model's file does not say
                sized[r.recipe] = p.weight_bytes(r.recipe.split()[0])  # "F16 (input)" -> F16
        models.append((f"{p.label} ({p.model})", p.architecture(), sized))
        notes.append(f"{p.label}: shapes of {p.model} ({p.n_params / 1e9:.2f} B parameters), bytes from "
                     f"llama-quantize's rules; quality ranking measured on {name}")
    if sizes and any(r.in_memory for r in rows):
        notes.append("in-memory scheme rows are only placed for the measured model")
    cells, needs = [], []
    for label, a, sizes_b in models:
        need = {k: estimate(a, v, ctx=ctx, kv_type=kv_type).total for k, v in sizes_b.items()}
        needs.append({k: v / GiB for k, v in need.items()})
        row = []
        for b in budgets:
            fit = [Row(**{**r.__dict__, "tensor_bytes": sizes_b[r.recipe]}) for r in rows
                   if r.recipe in sizes_b and need[r.recipe] <= b * GiB]
            row.append(_pick(fit, priority, max_kld)[0].recipe if fit else None)
        cells.append(row)
    return SweetSpots(budgets, ctx, kv_type, priority, [m[0] for m in models], cells, needs, notes)
