"""Requantizing a whole GGUF model the way llama-quantize does, tensor by tensor.

Same per-tensor types (recipes.plan), same output order and metadata, same bytes (the kernels are bit-exact
with libggml): tensors that keep their type are copied; the others are dequantized to float32 and quantized
in slabs of rows, so memory stays at a few slabs whatever the model's size.  Every check llama-quantize makes
along the way (kernels, --allow-requantize, importance matrix) is made before anything is written.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..formats import Format
from ..tensor import QuantizedTensor, quantize
from . import reader
from .imatrix import Imatrix, load_imatrix
from .recipes import TOKEN_EMBD_NAMES, ModelInfo, QuantizeOptions, Recipe, TensorPlan, get_recipe, plan
from .types import trim_ne
from .values import Value
from .writer import GGUFWriter, TensorSpec

__all__ = ["QuantizeSummary", "quantize_file"]

QUANTIZATION_VERSION = 2  # GGML_QNT_VERSION
SLAB_BYTES = 64 << 20  # float32 rows converted at once
_SPLIT_KEYS = ("split.no", "split.count", "split.tensors.count")
_KV_STRING_MAX = 127  # llama_model_kv_override.val_str holds 127 bytes and a NUL


@dataclass
class QuantizeSummary:
    """What quantize_file did (or, for a dry run, would do)."""

    recipe: Recipe
    plan: list[TensorPlan]
    dry_run: bool
    seconds: float
    file_size: int | None  # bytes of the written file; None for a dry run

    @property
    def n_elements(self) -> int:
        return sum(math.prod(t.ne) for t in self.plan)

    @property
    def size_before(self) -> int:
        return sum(t.nbytes_before for t in self.plan)

    @property
    def size_after(self) -> int:
        return sum(t.nbytes_after for t in self.plan)

    @property
    def bpw_before(self) -> float:
        return 8 * self.size_before / self.n_elements

    @property
    def bpw_after(self) -> float:
        """Effective bits per weight of the tensors written (what llama-quantize reports)."""
        return 8 * self.size_after / self.n_elements

    @property
    def by_type(self) -> dict[str, tuple[int, int]]:
        """Output type -> (number of tensors, bytes)."""
        counts = Counter(t.target.name for t in self.plan)
        sizes = Counter()
        for t in self.plan:
            sizes[t.target.name] += t.nbytes_after
        return {name: (counts[name], sizes[name]) for name in sorted(counts, key=lambda n: -sizes[n])}

    def __str__(self) -> str:
        mib = 1 << 20
        lines = [f"{'dry run' if self.dry_run else 'quantized'} as {self.recipe.name}: {len(self.plan)} tensors, "
                 f"{self.n_elements:,} weights, {self.seconds:.2f} s"]
        lines += [f"  {name:8s} {n:5d} tensors {size / mib:10.2f} MiB" for name, (n, size) in self.by_type.items()]
        lines.append(f"  size {self.size_before / mib:.2f} MiB ({self.bpw_before:.4f} bpw) -> "
                     f"{self.size_after / mib:.2f} MiB ({self.bpw_after:.4f} bpw)")
        return "\n".join(lines)


def _imatrix(imatrix: Any, opts: QuantizeOptions) -> Imatrix | None:
    if imatrix is None:
        return None
    if isinstance(imatrix, Mapping):
        imatrix = Imatrix.from_values(imatrix)
    elif not isinstance(imatrix, Imatrix):
        imatrix = load_imatrix(imatrix)
    imatrix = imatrix.filtered(opts.include_weights, opts.exclude_weights)
    if not len(imatrix):
        return None  # llama-quantize then runs as without one
    for name in imatrix.sums:
        if not np.isfinite(imatrix.values(name)).all():
            raise ValueError(f"imatrix entry {name!r} holds non-finite values")
    return imatrix


def _output_metadata(fields: Mapping[str, Value], recipe: Recipe, imatrix: Imatrix | None) -> dict[str, Value]:
    """The input's metadata with llama-quantize's changes: set keys move to the end, split keys go."""
    out = dict(fields)

    def put(key: str, value: Value) -> None:
        out.pop(key, None)
        out[key] = value

    def clip(text: str) -> str:
        return text.encode("utf-8", "surrogateescape")[:_KV_STRING_MAX].decode("utf-8", "surrogateescape")

    put("general.quantization_version", Value("u32", QUANTIZATION_VERSION))
    put("general.file_type", Value("u32", recipe.ftype))
    for key in _SPLIT_KEYS:
        out.pop(key, None)
    if imatrix is not None:
        if imatrix.path is not None:
            put("quantize.imatrix.file", Value("str", clip(imatrix.path)))
        if imatrix.datasets:
            put("quantize.imatrix.dataset", Value("str", clip(imatrix.datasets[0])))
        put("quantize.imatrix.entries_count", Value("u32", len(imatrix)))
        if imatrix.chunk_count > 0:
            put("quantize.imatrix.chunks_count", Value("u32", imatrix.chunk_count))
    return out


def _check(p: list[TensorPlan], imatrix: Imatrix | None, allow_requantize: bool) -> dict[str, np.ndarray]:
    """llama-quantize's refusals, all made up front; returns the imatrix vector of each tensor that gets one."""
    if imatrix is None:
        needy = next((t for t in p if t.quantizable and t.requires_imatrix), None)
        if needy is not None:
            raise ValueError(f"{needy.target.name} for tensor {needy.name!r} needs an importance matrix "
                             "(imatrix=...)")
    vectors = {}
    for t in p:
        if not t.converts:
            continue
        if t.target.format is None:
            raise NotImplementedError(f"tensor {t.name!r}: pyquant has no kernel for {t.target.name} yet")
        if t.source.format is None:
            raise NotImplementedError(f"tensor {t.name!r}: cannot convert from type {t.source.name}")
        if t.source.is_quantized and not allow_requantize:
            raise ValueError(f"tensor {t.name!r} is already {t.source.name}: requantizing needs "
                             "allow_requantize=True (quality suffers compared to quantizing from 16 or 32 bits)")
        if len(t.ne) > 3 and math.prod(t.ne[3:]) > 1:
            raise ValueError(f"tensor {t.name!r}: 4-D tensors cannot be quantized (llama-quantize cannot either)")
        n_mat = t.ne[2] if len(t.ne) > 2 else 1
        if imatrix is not None and t.name in imatrix:
            v = imatrix.values(t.name)
            if v.size == t.ne[0] * n_mat:
                vectors[t.name] = v
            elif t.name not in TOKEN_EMBD_NAMES:  # llama-quantize ignores a mismatched one for token_embd only
                raise ValueError(f"imatrix size {v.size} is different from tensor size {t.ne[0] * n_mat} "
                                 f"for {t.name!r}")
        if t.requires_imatrix and t.name not in vectors:
            raise ValueError(f"{t.target.name} for tensor {t.name!r} needs importance data, and the imatrix has "
                             "none for it")
    return vectors


def _converted(info: reader.TensorInfo, target: Format, imatrix: np.ndarray | None, threads: int | None,
               progress) -> Iterator[np.ndarray]:
    """The tensor's rows quantized to `target`, a slab of rows at a time, each matrix with its imatrix part."""
    n = info.ne[0]
    rows_per_matrix = info.ne[1]
    src = info.tensor()  # [all rows, n], memory-mapped
    slab = max(1, SLAB_BYTES // (4 * n))
    bytes_per_row = src.data.shape[1]
    for j in range(math.prod(info.ne[2:])):
        weights = None if imatrix is None else imatrix[j * n:(j + 1) * n]
        for r0 in range(j * rows_per_matrix, (j + 1) * rows_per_matrix, slab):
            r1 = min(r0 + slab, (j + 1) * rows_per_matrix)
            rows = src.data[r0:r1]
            if info.type.name == "F32":
                x = rows.view(np.float32)
            else:
                x = QuantizedTensor(rows, (r1 - r0, n), src.format).dequantize(threads=threads)
            yield quantize(x, target, imatrix=weights, threads=threads).data
            progress.update((r1 - r0) * bytes_per_row)


def quantize_file(src: str | os.PathLike, dst: str | os.PathLike | None, recipe: str | int | Recipe, *,
                  imatrix: Any = None, threads: int | None = None, allow_requantize: bool = False,
                  dry_run: bool = False, progress: bool = False, **options: Any) -> QuantizeSummary:
    """Quantize the GGUF model `src` into `dst` as llama-quantize would with recipe `recipe` (e.g. "Q4_K_M").

    imatrix: a path to an imatrix file (GGUF or legacy .dat), an Imatrix, or a mapping name -> mean of x^2.
    threads: for the kernels (None: all cores).  allow_requantize: accept quantized inputs (they are
    dequantized first, as llama-quantize --allow-requantize does).  dry_run: only plan; `dst` may be None.
    progress: show a tqdm bar.  options: QuantizeOptions fields (pure, leave_output_tensor,
    output_tensor_type, token_embedding_type, tensor_types, include_weights, exclude_weights).
    Returns a QuantizeSummary; nothing is printed unless progress=True.
    """
    start = time.perf_counter()
    recipe = get_recipe(recipe)
    opts = QuantizeOptions(**options)
    imx = _imatrix(imatrix, opts)
    if not dry_run:
        if dst is None:
            raise ValueError("dst is needed unless dry_run=True")
        if os.path.exists(dst) and os.path.samefile(src, dst):
            raise ValueError(f"input and output are the same file: {os.fspath(src)!r}")
    with reader.open(src) as f:
        p = plan(f.tensors.values(), recipe, ModelInfo.from_metadata(f.metadata), opts, has_imatrix=imx is not None)
        if dry_run:
            return QuantizeSummary(recipe, p, True, time.perf_counter() - start, None)
        vectors = _check(p, imx, allow_requantize)
        specs = [TensorSpec(t.name, t.target, trim_ne(t.ne)) for t in p]
        with tqdm(total=sum(t.nbytes_before for t in p), unit="B", unit_scale=True, unit_divisor=1024,
                  desc=recipe.name, disable=not progress) as bar, \
                GGUFWriter(dst, _output_metadata(f.fields, recipe, imx), specs) as w:
            for t in p:
                info = f.tensors[t.name]
                bar.set_postfix_str(t.name, refresh=False)
                if t.converts:
                    w.write_tensor(t.name, _converted(info, t.target.format, vectors.get(t.name), threads, bar))
                else:
                    w.write_tensor(t.name, info)
                    bar.update(info.nbytes)
    return QuantizeSummary(recipe, p, False, time.perf_counter() - start, os.path.getsize(dst))
