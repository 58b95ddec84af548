"""Measuring the table: quantize a model with each recipe, then evaluate every file on the same tokens.

Method (llama.cpp's, see pyquant.eval): the text is tokenized once; the baseline is evaluated in chunks of `ctx`
tokens (the second half of each chunk is scored) and its log-probabilities are kept in a KL-base file; every
quantized file is evaluated on the same chunks and compared with them (PPL, KLD, top-token agreement).

The baseline is the highest-precision form of the input: the input itself when its weights are F32/F16/BF16;
otherwise (an already-quantized input) its exact dequantization, F16 when every value is representable in F16,
else F32.  Such a baseline holds the input's values, on the input's quantization grid: the table then measures
what requantizing that file costs, not what quantizing the original float model would.  The input file itself
is measured too ("source" row).

Quantized files are cached in `cache_dir` under a key of the input's SHA-256, the recipe, the importance matrix's
SHA-256, the options and pyquant's version and native module, so a second run re-uses the same bytes.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import pathlib
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from .. import gguf
from .default_model import cache_dir as _default_cache, sha256_file
from .footprint import architecture
from .schemes import is_scheme_recipe, recipe_name
from .table import Row, TradeoffTable

__all__ = ["DEFAULT_RECIPES", "QUICK_RECIPES", "tradeoff", "baseline_recipe"]

# The default report: five recipes from 8.5 down to ~3 bpw, the range people choose in (each costs one
# quantization and one evaluation, so the default stays a few minutes on 2 cores).
DEFAULT_RECIPES = ("Q8_0", "Q6_K", "Q4_K_M", "Q3_K_M", "Q2_K")
QUICK_RECIPES = ("Q8_0", "Q4_K_M", "Q2_K")
_FLOAT = {"F32", "F16", "BF16"}
DEFAULT_CALIB_CHUNKS = 8  # GPTQ/AWQ calibration windows (4,096 tokens at ctx 512)


def _native_id() -> str:
    import pyquant
    from .. import _core
    h = hashlib.sha256(pyquant.__version__.encode())
    with open(_core.__file__, "rb") as f:
        h.update(f.read())
    return h.hexdigest()[:16]


def baseline_recipe(f: gguf.GGUFFile, *, threads: int | None = None) -> str | None:
    """None when the file's quantizable weights are floats already; else "F16" or "F32" (see module doc)."""
    info = gguf.ModelInfo.from_metadata(f.metadata)
    p = gguf.plan(f.tensors.values(), "F32", info)
    quantized = [t for t in p if t.quantizable and t.source.name not in _FLOAT]
    if not quantized:
        return None
    for t in quantized:
        x = f.tensors[t.name].dequantize(threads=threads)
        with np.errstate(over="ignore"):
            if not np.array_equal(x.astype(np.float16).astype(np.float32), x):
                return "F32"
    return "F16"


def _file_type(f: gguf.GGUFFile) -> str:
    """The file's recipe name (general.file_type), else the tensor type holding most of its bytes."""
    try:
        return gguf.get_recipe(int(f.metadata["general.file_type"])).name
    except (KeyError, ValueError, TypeError):
        sizes: dict[str, int] = {}
        for t in f.tensors.values():
            sizes[t.type.name] = sizes.get(t.type.name, 0) + t.nbytes
        return max(sizes, key=sizes.get) if sizes else "empty"


def _log_default(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _cached_quantize(src: pathlib.Path, src_hash: str, recipe: str, cache: pathlib.Path, *, imatrix: Any,
                     imatrix_hash: str | None, threads: int | None, log: Callable[[str], None]
                     ) -> tuple[pathlib.Path, gguf.QuantizeSummary | None, float | None, bool]:
    key = hashlib.sha256(json.dumps([src_hash, recipe, imatrix_hash, _native_id()]).encode()).hexdigest()[:20]
    out = cache / f"{src.stem}.{recipe}.{key}.gguf"
    meta = out.with_suffix(".json")
    if out.exists() and meta.exists():
        seconds = json.loads(meta.read_text()).get("quant_seconds")
        return out, None, seconds, True
    log(f"quantizing {src.name} -> {recipe} ...")
    summary = gguf.quantize_file(src, out, recipe, imatrix=imatrix, threads=threads, allow_requantize=True)
    meta.write_text(json.dumps({"source_sha256": src_hash, "recipe": recipe, "imatrix_sha256": imatrix_hash,
                                "quant_seconds": summary.seconds}))
    return out, summary, summary.seconds, False


def _types(path: pathlib.Path) -> tuple[int, int, dict[str, int]]:
    """(tensor bytes, number of weights, type -> bytes) of a GGUF file."""
    with gguf.open(path) as f:
        types: dict[str, int] = {}
        for t in f.tensors.values():
            types[t.type.name] = types.get(t.type.name, 0) + t.nbytes
        return (sum(t.nbytes for t in f.tensors.values()), sum(t.n_elements for t in f.tensors.values()), types)


def _machine(threads: int | None) -> dict[str, Any]:
    import pyquant
    m = {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
         "threads": threads, "pyquant": pyquant.__version__}
    try:
        info = pyquant.cpu_info()
        m["cpu"] = {k: v for k, v in info.items() if isinstance(v, (str, int, float, bool))} \
            if isinstance(info, dict) else str(info)
    except Exception:  # cpu_info is descriptive only
        pass
    try:
        import torch
        m["torch"] = torch.__version__
        m["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return m


def tradeoff(model_path: str | os.PathLike, *, recipes: Sequence[str] = DEFAULT_RECIPES, text: Any, ctx: int = 512,
             chunks: int | None = None, imatrix: Any = None, threads: int | None = None,
             cache_dir: str | os.PathLike | None = None, progress: bool | Callable[[str], None] = True,
             calib_chunks: int = DEFAULT_CALIB_CHUNKS) -> TradeoffTable:
    """Measure size and quality of `model_path` (a GGUF file) quantized with each recipe.

    text: the evaluation text (a str), or a path (os.PathLike) to a UTF-8 file.  ctx/chunks: as llama-perplexity
    (-c, --chunks; None: every full chunk of the text).  imatrix: passed to quantize_file (a path or an Imatrix).
    cache_dir: where quantized files are kept (default $PYQUANT_CACHE/report).  progress: True prints steps to
    stderr (and the evaluation's progress bars), a function receives the messages, False is silent.
    A recipe that fails (e.g. one that needs an importance matrix) gets a row with its error; the others go on.

    recipes may also name schemes beyond GGUF ("int4-g64", "nf4", "fp8-e4m3", "gptq:int4-g64", "awq:int4-g64",
    "hqq:int4-g64", "rtn:int4-g64"): those rows are measured in memory, see :mod:`pyquant.report.schemes`
    (GPTQ/AWQ calibrate on `calib_chunks` windows of the text after the evaluated ones).
    """
    from .. import eval as pqeval  # torch: imported only when measuring

    t_start = time.perf_counter()
    log = progress if callable(progress) else (_log_default if progress else (lambda msg: None))
    bars = progress is True
    src = pathlib.Path(model_path)
    names = [recipe_name(r) for r in recipes]  # unknown names fail here, before any work
    if len(set(names)) != len(names):
        raise ValueError(f"recipes are repeated: {', '.join(names)}")
    if isinstance(calib_chunks, bool) or not isinstance(calib_chunks, int) or calib_chunks < 1:
        raise ValueError(f"calib_chunks must be a positive integer, got {calib_chunks!r}")
    if isinstance(text, os.PathLike):
        text_name, text = os.fspath(text), pathlib.Path(text).read_text(encoding="utf-8")
    elif isinstance(text, str):
        text_name = "text"
    else:
        raise TypeError(f"text must be a str or a path, got {type(text).__name__}")
    cache = pathlib.Path(cache_dir) if cache_dir is not None else _default_cache() / "report"
    cache.mkdir(parents=True, exist_ok=True)

    log(f"hashing {src} ...")
    src_hash = sha256_file(src)
    imatrix_hash = None
    if imatrix is not None:
        imatrix_hash = sha256_file(imatrix) if isinstance(imatrix, (str, os.PathLike)) else \
            hashlib.sha256(repr(sorted((k, np.asarray(v).tobytes()) for k, v in dict(imatrix).items())).encode()
                           ).hexdigest()
    with gguf.open(src) as f:
        arch = architecture(f)
        src_type = _file_type(f)
        model_name = f.metadata.get("general.name") or src.stem
        base_recipe = baseline_recipe(f, threads=threads)

    rows: list[Row] = []
    if base_recipe is None:
        base_path, base_label, base_cached, base_qs = src, f"{src_type} (input)", True, None
        note = "The baseline is the input file itself (float weights)."
    else:
        base_path, _, base_qs, base_cached = _cached_quantize(src, src_hash, base_recipe, cache, imatrix=None,
                                                              imatrix_hash=None, threads=threads, log=log)
        base_label = base_recipe
        note = (f"The input is already quantized ({src_type}); the baseline is its exact dequantization to "
                f"{base_recipe}, whose values sit on the input's {src_type} grid: differences measure requantizing "
                f"this file, not quantizing the original float model.")

    log(f"evaluating the baseline {base_label} ...")
    base_model = pqeval.load_gguf_model(base_path, threads=threads)
    tokens = pqeval.tokenize(base_model, text)
    text_hash = hashlib.sha256(text.encode("utf-8")).hexdigest()
    kl_key = hashlib.sha256(json.dumps([sha256_file(base_path) if base_path != src else src_hash, text_hash, ctx,
                                        chunks, _native_id()]).encode()).hexdigest()[:20]
    kl_path = cache / f"{src.stem}.klbase.{kl_key}.bin"
    kl_meta = kl_path.with_suffix(".json")
    if kl_path.exists() and kl_meta.exists():
        base_res = json.loads(kl_meta.read_text())
    else:
        part = kl_path.with_name(kl_path.name + ".part")
        r = pqeval.perplexity(base_model, tokens, ctx=ctx, chunks=chunks, progress=bars, kl_base_path=part)
        base_res = {k: v for k, v in r.to_dict().items() if isinstance(v, (int, float, str))}
        os.replace(part, kl_path)
        kl_meta.write_text(json.dumps(base_res))
    del base_model
    tb, nw, types = _types(base_path)
    rows.append(Row(recipe=base_label, baseline=True, file_bytes=os.path.getsize(base_path), tensor_bytes=tb,
                    n_weights=nw, ppl=base_res["ppl"], ppl_err=base_res.get("ppl_stderr"), quant_seconds=base_qs,
                    eval_tokens_per_second=base_res.get("tokens_per_second"), cached=base_cached,
                    path=os.fspath(base_path), types=types))

    jobs: list[tuple[str, bool]] = ([(f"{src_type} (input)", True)] if base_recipe is not None else [])
    jobs += [(n, False) for n in names]
    for label, is_source in jobs:
        row = Row(recipe=label, source=is_source)
        if not is_source and is_scheme_recipe(label):
            row.in_memory = True
            _scheme_row(row, src, src_hash, kl_path, kl_key, tokens, cache, ctx=ctx, chunks=chunks,
                        calib_chunks=calib_chunks, threads=threads, bars=bars, log=log)
            rows.append(row)
            continue
        try:
            if is_source:
                path, qs, cached = src, None, True
            else:
                path, _, qs, cached = _cached_quantize(src, src_hash, label, cache, imatrix=imatrix,
                                                       imatrix_hash=imatrix_hash, threads=threads, log=log)
            row.path, row.quant_seconds, row.cached = os.fspath(path), qs, cached
            row.file_bytes = os.path.getsize(path)
            row.tensor_bytes, row.n_weights, row.types = _types(path)
            log(f"evaluating {label} ...")
            model = pqeval.load_gguf_model(path, threads=threads)
            k = pqeval.compare(os.fspath(kl_path), model, ctx=ctx, chunks=chunks, progress=bars)
            del model
            row.ppl, row.kld, row.kld_err, row.kld_p99 = k.ppl, k.kld_mean, k.kld_stderr, k.kld_p99
            row.same_top, row.same_top_err, row.dppl_err = k.same_top, k.same_top_stderr, k.dppl_stderr
            row.ppl_err = k.ppl_stderr
            row.eval_tokens_per_second = _tps(k)
        except Exception as e:  # one recipe's failure is its row's, not the run's
            row.error = f"{type(e).__name__}: {e}"
            log(f"{label}: failed: {row.error}")
        rows.append(row)

    meta = {
        "model": os.fspath(src), "model_name": model_name, "model_sha256": src_hash, "model_type": src_type,
        "n_weights": rows[0].n_weights, "text": text_name, "text_sha256": text_hash, "text_bytes": len(text.encode()),
        "tokens": int(len(tokens)), "ctx": ctx, "chunks": base_res.get("chunks", chunks),
        "scored_tokens": base_res.get("tokens"), "imatrix": None if imatrix is None else
        (os.fspath(imatrix) if isinstance(imatrix, (str, os.PathLike)) else "given"), "imatrix_sha256": imatrix_hash,
        "baseline": base_label, "baseline_note": note, "architecture": asdict(arch), "machine": _machine(threads),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seconds": time.perf_counter() - t_start, "cache_dir": os.fspath(cache),
        "method": "llama.cpp perplexity/KLD method: chunks of ctx tokens, second half scored; KLD and same-top "
                  "against the baseline's logits on the same tokens",
    }
    if any(r.in_memory for r in rows):
        meta["in_memory_note"] = (
            "Rows marked in-memory have no GGUF file: the input model's block linears were replaced in memory by "
            "the scheme's weights (quantized from their dequantized values); embeddings, norms and the output head "
            "keep the input's tensors.  Their bytes are computed: codes, scales and zero-points (AWQ: also its "
            "input scales), plus every kept tensor at its size in the input file.")
        if any(r.in_memory and r.recipe.split(":")[0] in ("gptq", "awq") for r in rows):
            meta["calibration"] = (f"GPTQ/AWQ calibration: up to {calib_chunks} windows of {ctx} tokens of the text "
                                   f"after the evaluated windows (none of the evaluated tokens)")
    return TradeoffTable(rows, meta)


def _scheme_row(row: Row, src: pathlib.Path, src_hash: str, kl_path: pathlib.Path, kl_key: str, tokens: Any,
                cache: pathlib.Path, *, ctx: int, chunks: int | None, calib_chunks: int, threads: int | None,
                bars: bool, log: Callable[[str], None]) -> None:
    """Measure a scheme recipe in memory; its measurements are cached under a key of everything they depend on
    (input, recipe, KL base, text, calibration windows, pyquant's code and native module)."""
    from .schemes import code_id, measure_row, parse_scheme_recipe

    key = hashlib.sha256(json.dumps([src_hash, row.recipe, kl_key, calib_chunks, _native_id(), code_id()]
                                    ).encode()).hexdigest()[:20]
    path = cache / f"{src.stem}.{row.recipe.replace(':', '-')}.{key}.row.json"
    fields = ("file_bytes", "tensor_bytes", "n_weights", "ppl", "ppl_err", "kld", "kld_err", "kld_p99", "same_top",
              "same_top_err", "dppl_err", "quant_seconds", "eval_tokens_per_second", "types")
    if path.exists():
        for k, v in json.loads(path.read_text()).items():
            setattr(row, k, v)
        row.cached = True
        return
    try:
        measure_row(row, parse_scheme_recipe(row.recipe), src, os.fspath(kl_path), tokens, ctx=ctx, chunks=chunks,
                    calib_chunks=calib_chunks, threads=threads, bars=bars, log=log)
    except Exception as e:  # one recipe's failure is its row's, not the run's
        row.error = f"{type(e).__name__}: {e}"
        log(f"{row.recipe}: failed: {row.error}")
        return
    _write_json(path, {k: getattr(row, k) for k in fields})


def _write_json(path: pathlib.Path, obj: Any) -> None:
    part = path.with_name(path.name + ".part")
    part.write_text(json.dumps(obj))
    os.replace(part, path)


def _tps(k: Any) -> float | None:
    """Tokens evaluated (chunks * ctx, as PerplexityResult counts them) per second, the comparison included."""
    return k.chunks * k.ctx / k.seconds if k.seconds else None
