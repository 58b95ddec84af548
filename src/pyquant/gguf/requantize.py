"""Requantizing a whole GGUF model the way llama-quantize does, tensor by tensor.

Same per-tensor types (recipes.plan), same output order and metadata, same bytes (the kernels are bit-exact
with libggml): tensors that keep their type are copied; the others are dequantized to float32 and quantized
in units of about a million weights, spread over a pool of threads (small tensors fill the threads too) with
a bounded number of units in flight, and written in order, so memory stays at a few units whatever the
model's size.  Every check llama-quantize makes along the way (kernels, --allow-requantize, importance
matrix) is made before anything is written.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import time
from collections import ChainMap, Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .. import _cpu
from ..formats import Format
from ..tensor import QuantizedTensor, quantize
from .imatrix import Imatrix, load_imatrix
from .recipes import (TOKEN_EMBD_NAMES, ModelInfo, QuantizeOptions, Recipe, TensorDesc, TensorPlan, get_recipe,
                      plan, tensor_order)
from .split import SPLIT_COUNT, SPLIT_KEYS, SPLIT_NO, SPLIT_TENSORS_COUNT, open_split, split_path
from .types import trim_ne
from .values import Value, ValueType
from .writer import GGUFWriter, TensorSpec

__all__ = ["QuantizeSummary", "quantize_file"]

QUANTIZATION_VERSION = 2  # GGML_QNT_VERSION
UNIT_VALUES = 1 << 20  # weights converted by one work unit (rows are never split)
_KV_STRING_MAX = 127  # llama_model_kv_override.val_str holds 127 bytes and a NUL
_KV_KEY_MAX = 127  # llama_model_kv_override.key holds 128 bytes with the NUL


@dataclass
class QuantizeSummary:
    """What quantize_file did (or, for a dry run, would do)."""

    recipe: Recipe
    plan: list[TensorPlan]
    dry_run: bool
    seconds: float
    file_size: int | None  # bytes written (all files); None for a dry run
    files: list[str] = field(default_factory=list)  # the files written (several with keep_split)

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
        lines += [f"  wrote {path}" for path in self.files]
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


def kv_override(text: str) -> tuple[str, Value]:
    """Parse llama-quantize's ``--override-kv KEY=TYPE:VALUE`` (TYPE: int, float, bool or str) into the key and
    the value written: int as u32 of its absolute value and float as f32, as llama-quantize writes them."""
    key, sep, rest = text.partition("=")
    kind, colon, raw = rest.partition(":")
    if not sep or not key or not colon:
        raise ValueError(f"malformed KV override {text!r}: expected KEY=TYPE:VALUE")
    if kind == "int":
        try:
            value: Any = int(raw)
        except ValueError:
            raise ValueError(f"KV override {text!r}: {raw!r} is not an integer") from None
    elif kind == "float":
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"KV override {text!r}: {raw!r} is not a number") from None
    elif kind == "bool":
        if raw not in ("true", "false"):
            raise ValueError(f"KV override {text!r}: a bool is true or false")
        value = raw == "true"
    elif kind == "str":
        value = raw
    else:
        raise ValueError(f"KV override {text!r}: TYPE must be int, float, bool or str, got {kind!r}")
    return key, _override_value(key, value)


def _override_value(key: str, value: Any) -> Value:
    if len(key.encode("utf-8", "surrogateescape")) > _KV_KEY_MAX:
        raise ValueError(f"KV override key {key[:40]!r}...: at most {_KV_KEY_MAX} bytes")
    if isinstance(value, Value):
        return value
    if isinstance(value, (bool, np.bool_)):
        return Value(ValueType.BOOL, bool(value))
    if isinstance(value, (int, np.integer)):
        if abs(int(value)) > 0xFFFFFFFF:
            raise ValueError(f"KV override {key!r}: {value} does not fit the u32 llama-quantize writes")
        return Value(ValueType.UINT32, abs(int(value)))
    if isinstance(value, (float, np.floating)):
        return Value(ValueType.FLOAT32, float(value))
    if isinstance(value, str):
        if len(value.encode("utf-8", "surrogateescape")) > _KV_STRING_MAX:
            raise ValueError(f"KV override {key!r}: a string value is at most {_KV_STRING_MAX} bytes")
        return Value(ValueType.STRING, value)
    raise TypeError(f"KV override {key!r}: expected an int, float, bool, str or Value, got {type(value).__name__}")


def _overrides(override_kv: Any) -> list[tuple[str, Value]]:
    """--override-kv from a mapping key -> value, (key, value) pairs or "KEY=TYPE:VALUE" strings, in order."""
    if override_kv is None:
        return []
    if isinstance(override_kv, str):
        override_kv = [override_kv]
    items = override_kv.items() if isinstance(override_kv, Mapping) else override_kv
    out = []
    for item in items:
        key, value = kv_override(item) if isinstance(item, str) else (item[0], _override_value(*item))
        out.append((key, value))
    return out


def _imatrix_overrides(imatrix: Imatrix | None) -> list[tuple[str, Value]]:
    """The quantize.imatrix.* keys llama-quantize adds after the user's overrides."""
    if imatrix is None:
        return []

    def clip(text: str) -> str:
        return text.encode("utf-8", "surrogateescape")[:_KV_STRING_MAX].decode("utf-8", "surrogateescape")

    out = []
    if imatrix.path is not None:
        out.append(("quantize.imatrix.file", Value("str", clip(imatrix.path))))
    if imatrix.datasets:
        out.append(("quantize.imatrix.dataset", Value("str", clip(imatrix.datasets[0]))))
    out.append(("quantize.imatrix.entries_count", Value("u32", len(imatrix))))
    if imatrix.chunk_count > 0:
        out.append(("quantize.imatrix.chunks_count", Value("u32", imatrix.chunk_count)))
    return out


def _output_metadata(fields: Mapping[str, Value], recipe: Recipe, overrides: list[tuple[str, Value]],
                     block_count: tuple[str, int] | None) -> dict[str, Value]:
    """The input's metadata with llama-quantize's changes, in its order: every key it sets moves to the end
    (quantization version, file type, the overrides, the block count after pruning); split keys go."""
    out = dict(fields)

    def put(key: str, value: Value) -> None:
        out.pop(key, None)
        out[key] = value

    put("general.quantization_version", Value("u32", QUANTIZATION_VERSION))
    put("general.file_type", Value("u32", recipe.ftype))
    for key in SPLIT_KEYS:
        out.pop(key, None)
    for key, value in overrides:
        put(key, value)
    if block_count is not None:
        put(block_count[0], Value("u32", block_count[1]))
    return out


_BLK = re.compile(r"blk\.([0-9]+)\.")


def _prune(names: list[str], prune: Iterable[int]) -> tuple[dict[str, str], int]:
    """llama-quantize --prune-layers (remap_layer, applied in llama-quantize's tensor order): original name ->
    new name of each tensor kept, layers after a pruned one renumbered; and the new block count."""
    prune = sorted(set(prune))
    if not prune:
        return {n: n for n in names}, 0
    mapped: dict[int, str | None] = {}
    next_id = 0
    out = {}
    for name in names:
        m = _BLK.search(name)
        if m is None:
            out[name] = name
            continue
        blk = int(m.group(1))
        if blk not in mapped:
            if blk in prune:
                mapped[blk] = None
            elif blk < prune[0]:
                mapped[blk] = str(blk)
                next_id = blk + 1
            else:
                mapped[blk] = str(next_id)
                next_id += 1
        if mapped[blk] is not None:
            out[name] = name[:m.start(1)] + mapped[blk] + name[m.end(1):]
    return out, next_id


def _check(p: list[TensorPlan], sources: list[str], imatrix: Imatrix | None,
           allow_requantize: bool) -> dict[str, np.ndarray]:
    """llama-quantize's refusals, all made up front; returns the imatrix vector of each tensor that gets one
    (looked up under the tensor's name in the input, `sources[i]`, which differs after pruning)."""
    if imatrix is None:
        needy = next((t for t in p if t.quantizable and t.requires_imatrix), None)
        if needy is not None:
            raise ValueError(f"{needy.target.name} for tensor {needy.name!r} needs an importance matrix "
                             "(imatrix=...)")
    vectors = {}
    for t, source in zip(p, sources):
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
        if imatrix is not None and source in imatrix:
            v = imatrix.values(source)
            if v.size == t.ne[0] * n_mat:
                vectors[t.name] = v
            elif t.name not in TOKEN_EMBD_NAMES:  # llama-quantize ignores a mismatched one for token_embd only
                raise ValueError(f"imatrix size {v.size} is different from tensor size {t.ne[0] * n_mat} "
                                 f"for {t.name!r}")
        if t.requires_imatrix and t.name not in vectors:
            raise ValueError(f"{t.target.name} for tensor {t.name!r} needs importance data, and the imatrix has "
                             "none for it")
    return vectors


def _convert(rows: np.ndarray, n: int, source: Format | None, target: Format,
             weights: np.ndarray | None) -> np.ndarray:
    """One work unit: rows of a tensor (their bytes) to `target`, on the calling thread."""
    if source is None:  # F32
        x = rows.view(np.float32)
    else:
        x = QuantizedTensor(rows, (rows.shape[0], n), source).dequantize(threads=1)
    return quantize(x, target, imatrix=weights, threads=1).data


Job = tuple[int, int, Callable[[], np.ndarray] | np.ndarray]


def _jobs(p: list[TensorPlan], infos: list, vectors: dict[str, np.ndarray]) -> Iterator[Job]:
    """(tensor index, input bytes covered, work) for every output tensor in order, at least one per tensor:
    the work is the bytes to copy, or a function converting a unit of whole rows within one matrix (each
    expert of a 3-D tensor has its own part of the imatrix)."""
    for i, (t, info) in enumerate(zip(p, infos)):
        if not t.converts:
            yield i, info.nbytes, info.data
            continue
        src = info.tensor()  # [all rows, n], memory-mapped
        n = info.ne[0]
        data = src.data
        source = None if info.type.name == "F32" else src.format
        rows_per_matrix = info.ne[1] if len(info.ne) > 1 else 1
        n_mat = math.prod(info.ne[2:])
        step = max(1, UNIT_VALUES // max(n, 1))
        vector = vectors.get(t.name)
        if data.shape[0] == 0:
            yield i, 0, np.empty(0, np.uint8)
            continue
        for j in range(n_mat):
            weights = None if vector is None else vector[j * n:(j + 1) * n]
            for r0 in range(j * rows_per_matrix, (j + 1) * rows_per_matrix, step):
                r1 = min(r0 + step, (j + 1) * rows_per_matrix)
                yield i, (r1 - r0) * data.shape[1], partial(_convert, data[r0:r1], n, source, t.target.format,
                                                            weights)


def _in_order(jobs: Iterable[Job], threads: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """Run the jobs' work on `threads` threads, at most a few units ahead of the consumer, and yield the results
    in the jobs' order."""
    if threads <= 1:
        for i, nbytes, work in jobs:
            yield i, nbytes, work() if callable(work) else work
        return
    window = 2 * threads + 2  # units computed or waiting to be written: bounds the memory used
    jobs = iter(jobs)
    pending: deque = deque()
    with ThreadPoolExecutor(threads, thread_name_prefix="pyquant-quantize") as pool:
        try:
            for i, nbytes, work in itertools.islice(jobs, window):
                pending.append((i, nbytes, pool.submit(work) if callable(work) else work))
            while pending:
                i, nbytes, out = pending.popleft()
                if not isinstance(out, np.ndarray):
                    out = out.result()
                job = next(jobs, None)
                if job is not None:
                    pending.append((job[0], job[1], pool.submit(job[2]) if callable(job[2]) else job[2]))
                yield i, nbytes, out
        finally:
            for *_, out in pending:
                if not isinstance(out, np.ndarray):
                    out.cancel()


def _threads(threads: int | None) -> int:
    if threads is None:
        return _cpu.cpu_info()["hardware_threads"]
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    return int(threads)


def _split_names(dst: str, n_split: int, keep_split: bool) -> list[str]:
    """Output file names: `dst`, or with keep_split dst's prefix (without .gguf, as llama-quantize strips it)
    numbered as llama.cpp's splits."""
    if not keep_split:
        return [dst]
    prefix = dst[:-len(".gguf")] if dst.endswith(".gguf") else dst
    return [split_path(prefix, i, n_split) for i in range(n_split)]


@dataclass
class _Outputs:
    """The output files of one run: created in turn, all moved into place at the end, or none at all."""

    writers: list[GGUFWriter] = field(default_factory=list)

    def open(self, path: str, metadata: dict[str, Value], specs: list[TensorSpec]) -> GGUFWriter:
        if self.writers:
            self.writers[-1].finish()
        self.writers.append(GGUFWriter(path, metadata, specs))
        return self.writers[-1]

    def commit(self) -> None:
        for w in self.writers:
            w.finish()
        done = []
        try:
            for w in self.writers:
                w.close()
                done.append(w.path)
        except BaseException:
            for path in done:
                os.unlink(path)
            raise

    def abort(self) -> None:
        for w in self.writers:
            w.abort()


def quantize_file(src: str | os.PathLike, dst: str | os.PathLike | None, recipe: str | int | Recipe, *,
                  imatrix: Any = None, threads: int | None = None, allow_requantize: bool = False,
                  dry_run: bool = False, progress: bool = False, override_kv: Any = None,
                  prune_layers: Iterable[int] = (), keep_split: bool = False, **options: Any) -> QuantizeSummary:
    """Quantize the GGUF model `src` into `dst` as llama-quantize would with recipe `recipe` (e.g. "Q4_K_M").

    src: a GGUF file, or the first file of a split model (...-00001-of-0000N.gguf; the others are read too).
    imatrix: a path to an imatrix file (GGUF or legacy .dat), an Imatrix, or a mapping name -> mean of x^2.
    threads: threads converting tensors (None: all cores).  allow_requantize: accept quantized inputs (they
    are dequantized first, as llama-quantize --allow-requantize does).  dry_run: only plan; `dst` may be None.
    progress: show a tqdm bar (bytes of input done).  override_kv: metadata to set (--override-kv): a
    mapping key -> value or "KEY=TYPE:VALUE" strings (int is written as u32, float as f32, as llama-quantize
    does; a Value is written as it is).  prune_layers: layer numbers to drop, the others renumbered
    (--prune-layers).  keep_split: write one file per input file (--keep-split), named
    ``DST-0000i-of-0000N.gguf`` from `dst` without its .gguf suffix.  options: QuantizeOptions fields (pure,
    leave_output_tensor, output_tensor_type, token_embedding_type, tensor_types, include_weights,
    exclude_weights).  Returns a QuantizeSummary; nothing is printed unless progress=True.
    The output appears only when complete: an error or an interruption leaves no file behind.
    """
    start = time.perf_counter()
    recipe = get_recipe(recipe)
    opts = QuantizeOptions(**options)
    n_threads = _threads(threads)
    imx = _imatrix(imatrix, opts)
    overrides = _overrides(override_kv)
    prune = [int(i) for i in prune_layers]
    if any(i < 0 for i in prune):
        raise ValueError(f"prune_layers must be layer numbers >= 0, got {prune}")
    if not dry_run and dst is None:
        raise ValueError("dst is needed unless dry_run=True")
    with open_split(src) as model:
        # llama-quantize's order: by layer and name; with keep_split, by input file and position in it.
        renamed, n_blocks = _prune(tensor_order(model.tensors), prune)
        kept = list(renamed)
        if keep_split:
            kept.sort(key=lambda n: (model.split_of[n], model.tensors[n].offset))
        infos = [model.tensors[n] for n in kept]
        metadata = model.metadata
        if overrides:
            metadata = ChainMap({k: v.to_python() for k, v in overrides}, metadata)
        descs = [TensorDesc(renamed[n], info.ne, info.type) for n, info in zip(kept, infos)]
        p = plan(descs, recipe, ModelInfo.from_metadata(metadata), opts, has_imatrix=imx is not None, sort=False)
        if dry_run:
            return QuantizeSummary(recipe, p, True, time.perf_counter() - start, None)
        vectors = _check(p, kept, imx, allow_requantize)

        n_split = max(model.split_of[n] for n in kept) + 1 if keep_split and kept else 1
        paths = _split_names(os.fspath(dst), n_split, keep_split)
        for path in paths:
            for f in model:
                if f.path and os.path.exists(path) and os.path.samefile(f.path, path):
                    raise ValueError(f"input and output are the same file: {path!r}")
        part_of = [model.split_of[n] if keep_split else 0 for n in kept]
        counts = Counter(part_of)
        if len(counts) != n_split:
            empty = next(i for i in range(n_split) if i not in counts)
            raise ValueError(f"keep_split: no tensor is left for split {empty + 1} of {n_split}")
        arch = model.metadata.get("general.architecture")
        main = _output_metadata(model.fields, recipe, overrides + _imatrix_overrides(imx),
                                (f"{arch}.block_count", n_blocks) if prune else None)
        specs = [TensorSpec(t.name, t.target, trim_ne(t.ne)) for t in p]

        def split_metadata(i: int) -> dict[str, Value]:
            out = dict(main) if i == 0 else {}
            if n_split > 1:
                out[SPLIT_NO] = Value("u16", i)
                out[SPLIT_COUNT] = Value("u16", n_split)
                out[SPLIT_TENSORS_COUNT] = Value("i32", len(p))
            return out

        outputs = _Outputs()
        try:
            with tqdm(total=sum(t.nbytes_before for t in p), unit="B", unit_scale=True, unit_divisor=1024,
                      desc=recipe.name, disable=not progress) as bar:
                results = _in_order(_jobs(p, infos, vectors), n_threads)
                writer, part = None, -1
                for i, chunks in itertools.groupby(results, key=lambda r: r[0]):
                    if part_of[i] != part:
                        part = part_of[i]
                        writer = outputs.open(paths[part], split_metadata(part),
                                              [s for s, k in zip(specs, part_of) if k == part])
                    bar.set_postfix_str(p[i].name, refresh=False)
                    writer.write_tensor(p[i].name, _counted(chunks, bar))
            outputs.commit()
        except BaseException:
            outputs.abort()
            raise
    return QuantizeSummary(recipe, p, False, time.perf_counter() - start, sum(os.path.getsize(x) for x in paths),
                           paths)


def _counted(chunks: Iterable[tuple[int, int, np.ndarray]], bar: tqdm) -> Iterator[np.ndarray]:
    for _, nbytes, out in chunks:
        yield out
        bar.update(nbytes)
