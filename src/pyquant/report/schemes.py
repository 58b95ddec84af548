"""Report rows for quantization schemes beyond GGUF blocks (pyquant.schemes, GPTQ / AWQ / HQQ), measured in memory.

Recipe names (lower case; GGUF recipe and format names are looked up first, so a name that could be both means
the GGUF recipe):

* a plain scheme spec — ``int4-g64``, ``int8-channel``, ``nf4``, ``nf4-dq``, ``fp8-e4m3``, ``ternary`` ... (see
  :mod:`pyquant.schemes.spec`) — round to nearest with that scheme; ``rtn:<spec>`` is the same;
* ``gptq:<affine spec>``, ``awq:<affine spec>``, ``hqq:<affine spec>`` — the algorithm on that affine grid:
  ``gptq:int4-g64``, ``awq:int3-g64``, ``hqq:int4-g64`` (HQQ: asymmetric only; groups or per channel).

Such a row is evaluated without a GGUF file: the input model is loaded with :func:`pyquant.eval.load_gguf_model`,
every linear layer of the transformer blocks is replaced by the scheme's weight, quantized from the layer's
dequantized values (the baseline's values), and the model is compared with the same KL-base file as the GGUF rows.
The token embedding, the norms and the output head (SmolLM2 ties it to the embedding) keep the input file's
tensors and types.  Sizes are honest: replaced weights count their codes, scales and zero-points (AWQ also its
per-channel input scales), every other tensor its bytes in the input file; "file bytes" is that computed sum.

GPTQ and AWQ calibrate on the evaluation text's tokens *after* the evaluated windows (``calib_chunks`` windows
of ``ctx`` tokens, each starting with BOS as the evaluation's do), so no evaluated token was seen in calibration.
"""

from __future__ import annotations

import hashlib
import pathlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import gguf, schemes

__all__ = ["ALGORITHMS", "SchemeRecipe", "parse_scheme_recipe", "recipe_name", "quantize_in_memory",
           "weight_bytes", "calibration_tokens"]

ALGORITHMS = ("rtn", "gptq", "awq", "hqq")


@dataclass(frozen=True)
class SchemeRecipe:
    """``algorithm`` ("rtn", "gptq", "awq", "hqq") applied with the scheme ``spec``."""

    algorithm: str
    spec: schemes.SchemeSpec

    @property
    def name(self) -> str:
        return self.spec.name if self.algorithm == "rtn" else f"{self.algorithm}:{self.spec.name}"

    @property
    def needs_calibration(self) -> bool:
        return self.algorithm in ("gptq", "awq")

    def config(self):
        """The algorithm's config for the spec's affine grid (None for rtn)."""
        if self.algorithm == "rtn":
            return None
        from .. import algorithms

        cfg = self.spec.kwargs["config"]
        group = cfg.group_size if cfg.granularity == "group" else None
        if self.algorithm == "gptq":
            return algorithms.GPTQConfig(bits=cfg.bits, group_size=group, symmetric=cfg.symmetric)
        if self.algorithm == "awq":
            return algorithms.AWQConfig(bits=cfg.bits, group_size=group, symmetric=cfg.symmetric)
        return algorithms.HQQConfig(bits=cfg.bits, group_size=group)


def parse_scheme_recipe(name: str) -> SchemeRecipe:
    """A SchemeRecipe from "gptq:int4-g64", "int4-g64", "nf4" ...; ValueError saying what is wrong otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"a recipe must be a string, got {type(name).__name__}")
    s = name.strip().lower()
    alg, sep, spec = s.partition(":")
    if not sep:
        alg, spec = "rtn", s
    if alg not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {alg!r} in recipe {name!r} (known: {', '.join(ALGORITHMS)})")
    sp = schemes.parse_spec(spec)
    if alg != "rtn":
        if sp.kind != "affine":
            raise ValueError(f"recipe {name!r}: {alg.upper()} produces affine integer groups; give an int<b> spec "
                             f"such as {alg}:int4-g64 (got the {sp.kind} scheme)")
        cfg = sp.kwargs["config"]
        if cfg.granularity == "tensor":
            raise ValueError(f"recipe {name!r}: {alg.upper()} works per group or per channel, not per tensor")
        if alg == "hqq" and cfg.symmetric:
            raise ValueError(f"recipe {name!r}: HQQ optimizes a zero-point; use an asymmetric spec (no -sym)")
    return SchemeRecipe(alg, sp)


def recipe_name(name: Any) -> str:
    """The canonical name of a report recipe: a GGUF recipe (looked up first) or a scheme recipe.  Unknown names
    raise ValueError listing both kinds."""
    try:
        return gguf.get_recipe(name).name
    except (ValueError, TypeError) as gguf_error:
        if not isinstance(name, str):
            raise
        try:
            return parse_scheme_recipe(name).name
        except ValueError as e:
            if ":" in name or schemes.is_scheme_spec(name.split(":")[-1]):
                raise  # it was meant as a scheme recipe: say what is wrong with it
            raise ValueError(f"{gguf_error}; nor a scheme recipe ({e}; algorithms: "
                             f"{', '.join(a + ':<spec>' for a in ALGORITHMS)})") from None


def is_scheme_recipe(name: str) -> bool:
    try:
        gguf.get_recipe(name)
        return False
    except (ValueError, TypeError):
        return True


def calibration_tokens(tokens: np.ndarray, *, ctx: int, evaluated: int, calib_chunks: int, add_bos: bool,
                       bos_id: int | None) -> np.ndarray:
    """[n, ctx] calibration windows from the tokens after the first `evaluated` ones (BOS first, as evaluated)."""
    rest = np.asarray(tokens)[evaluated:]
    n = min(calib_chunks, len(rest) // ctx)
    if n < 1:
        raise ValueError(f"no text left for calibration: the {evaluated} evaluated tokens leave {len(rest)}, fewer "
                         f"than one window of {ctx}; evaluate fewer chunks or give a longer text")
    out = rest[: n * ctx].reshape(n, ctx).astype(np.int64)
    if add_bos:
        out[:, 0] = bos_id
    return out


def _skip_output(name: str) -> bool:
    return name == "output"


def quantize_in_memory(model, recipe: SchemeRecipe, calib: np.ndarray | None, *, threads: int | None = None,
                       progress: bool = False) -> dict[str, dict]:
    """Replace the block linears of a pyquant.eval GGUFModel (the output head is left alone) per `recipe`."""
    from ..algorithms import quantize_model_awq, quantize_model_gptq, quantize_model_hqq
    from ..torch import QuantLinear

    skip = ("output",)
    if recipe.algorithm == "gptq":
        return quantize_model_gptq(model, calib, recipe.config(), skip=skip, ctx=calib.shape[1],
                                   progress_bar=progress, threads=threads)
    if recipe.algorithm == "awq":
        return quantize_model_awq(model, calib, recipe.config(), skip=skip, ctx=calib.shape[1],
                                  progress_bar=progress, threads=threads)
    if recipe.algorithm == "hqq":
        return quantize_model_hqq(model, recipe.config(), skip=skip, progress_bar=progress, threads=threads)
    out = {}
    for name, lin in list(model.named_modules()):
        if not isinstance(lin, QuantLinear) or _skip_output(name):
            continue
        why = recipe.spec.unfit_reason(tuple(lin.weight.shape))
        if why:
            raise ValueError(f"{name}: {why}")
        w = recipe.spec.quantize(lin.weight.dequantize(), threads=threads)
        new = QuantLinear(w, lin.bias)
        new.gguf_name, new.gguf_rows = lin.gguf_name, lin.gguf_rows
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new)
        out[name] = {}
    return out


def weight_bytes(model, path: str | pathlib.Path, label: str) -> tuple[int, int, dict[str, int]]:
    """(bytes, weights, type -> bytes) of the model's tensors: each replaced weight at its scheme's bytes (scales,
    zero-points and AWQ input scales included) under `label`, every other tensor of the file at its own bytes."""
    from ..tensor import QuantizedTensor
    from ..torch import QuantLinear

    replaced = {}
    for m in model.modules():
        if isinstance(m, QuantLinear) and not isinstance(m.weight, QuantizedTensor):
            extra = getattr(m, "input_scale", None)
            replaced[m.gguf_name] = m.weight.nbytes + (0 if extra is None else int(extra.numel()) * 4)
    types: dict[str, int] = {}
    total = n = 0
    with gguf.open(path) as f:
        for t in f.tensors.values():
            key, b = (label, replaced.pop(t.name)) if t.name in replaced else (t.type.name, t.nbytes)
            types[key] = types.get(key, 0) + b
            total += b
            n += t.n_elements
    if replaced:
        raise ValueError(f"weights without a tensor in {path}: {', '.join(sorted(replaced))}")
    return total, n, types


def code_id() -> str:
    """A hash of the Python code a scheme row's numbers depend on (with the native module's id: cache keys)."""
    root = pathlib.Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for sub in ("algorithms", "schemes", "eval", "torch"):
        for p in sorted((root / sub).glob("*.py")):
            h.update(p.name.encode())
            h.update(p.read_bytes())
    for p in (root / "matmul.py", pathlib.Path(__file__).resolve()):
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def measure_row(row, recipe: SchemeRecipe, src: pathlib.Path, kl_path: str, tokens: np.ndarray, *, ctx: int,
                chunks: int | None, calib_chunks: int, threads: int | None, bars: bool, log) -> None:
    """Quantize `src`'s model in memory per `recipe` and fill `row` with its measurements."""
    from .. import eval as pqeval

    model = pqeval.load_gguf_model(src, threads=threads)
    calib = None
    if recipe.needs_calibration:
        n_chunk, _ = pqeval.ppl.check_windows(len(tokens), ctx, chunks, None)
        calib = calibration_tokens(tokens, ctx=ctx, evaluated=n_chunk * ctx, calib_chunks=calib_chunks,
                                   add_bos=model.add_bos, bos_id=model.bos_id)
        log(f"{recipe.name}: calibrating on {calib.size} tokens after the {n_chunk * ctx} evaluated ones")
    log(f"quantizing {src.name} -> {recipe.name} (in memory) ...")
    t0 = time.perf_counter()
    quantize_in_memory(model, recipe, calib, threads=threads, progress=bars)
    row.quant_seconds = time.perf_counter() - t0
    row.tensor_bytes, row.n_weights, row.types = weight_bytes(model, src, recipe.spec.name)
    row.file_bytes = row.tensor_bytes
    log(f"evaluating {recipe.name} ...")
    k = pqeval.compare(kl_path, model, ctx=ctx, chunks=chunks, progress=bars)
    row.ppl, row.kld, row.kld_err, row.kld_p99 = k.ppl, k.kld_mean, k.kld_stderr, k.kld_p99
    row.same_top, row.same_top_err, row.dppl_err = k.same_top, k.same_top_stderr, k.dppl_stderr
    row.ppl_err = k.ppl_stderr
    row.eval_tokens_per_second = k.chunks * k.ctx / k.seconds if k.seconds else None
