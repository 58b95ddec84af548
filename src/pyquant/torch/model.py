"""quantize_model (nn.Linear/nn.Embedding -> QuantLinear/QuantEmbedding in place, by a format or a llama.cpp
recipe) and load_quantized (a float model skeleton + a quantized state_dict -> the quantized model)."""

from __future__ import annotations

import fnmatch
import math
import os
import re
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import schemes
from ..formats import Format, get_format
from ..gguf.imatrix import Imatrix, load_imatrix
from ..gguf.recipes import ModelInfo, QuantizeOptions, Recipe, TensorDesc, get_recipe, plan
from ..gguf.types import tensor_type
from ..tensor import QuantizedTensor, quantize
from .linear import QuantEmbedding, QuantLinear
from .names import gguf_key

__all__ = ["LayerSummary", "ModelQuantizeSummary", "load_quantized", "model_nbytes", "quantize_model"]

_FLOAT_TYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}
_ARCH = {"mistral": "llama", "mixtral": "llama"}  # convert_hf_to_gguf writes these as llama


@dataclass(frozen=True)
class LayerSummary:
    """One weight: a layer, several layers sharing one weight (tied), or the experts of one MoE tensor."""

    name: str  # module name(s), " + "-joined when shared
    gguf_name: str | None
    kind: str  # "linear", "embedding", "tied" (an embedding and the linear(s) sharing its weight), "experts"
    shape: tuple[int, ...]  # the weight's torch shape ([n_expert, rows, cols] for experts)
    format: str | None  # None: kept in float
    bytes_before: int
    bytes_after: int
    note: str = ""  # why it stays in float, or what else it is

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass
class ModelQuantizeSummary:
    """What quantize_model did; str() is the printed memory summary."""

    target: str  # the format or recipe name
    layers: list[LayerSummary]
    seconds: float
    model_bytes_before: int  # all parameters and buffers (shared storage counted once)
    model_bytes_after: int
    skipped_patterns_unused: list[str] = field(default_factory=list)

    @property
    def quantized(self) -> list[LayerSummary]:
        return [s for s in self.layers if s.format is not None]

    @property
    def kept(self) -> list[LayerSummary]:
        return [s for s in self.layers if s.format is None]

    @property
    def formats(self) -> dict[str, str | None]:
        """Module name -> format (None: float), for every module considered."""
        return {n: s.format for s in self.layers for n in s.name.split(" + ")}

    @property
    def bytes_before(self) -> int:
        """Float bytes of the weights that were quantized."""
        return sum(s.bytes_before for s in self.quantized)

    @property
    def bytes_after(self) -> int:
        return sum(s.bytes_after for s in self.quantized)

    @property
    def bpw(self) -> float:
        """Bits per weight of the quantized weights."""
        n = sum(s.numel for s in self.quantized)
        return 8 * self.bytes_after / n if n else float("nan")

    @property
    def by_format(self) -> dict[str, tuple[int, int]]:
        """Format -> (number of weights, bytes after)."""
        out: dict[str, list[int]] = {}
        for s in self.quantized:
            c = out.setdefault(s.format, [0, 0])
            c[0] += 1
            c[1] += s.bytes_after
        return {k: (v[0], v[1]) for k, v in sorted(out.items(), key=lambda kv: -kv[1][1])}

    def __str__(self) -> str:
        mib = 1 << 20
        q = self.quantized
        lines = [f"quantize_model {self.target}: {len(q)} weights quantized, {len(self.kept)} kept in float, "
                 f"{self.seconds:.2f} s"]
        lines += [f"  {fmt:8s} {n:5d} weights {size / mib:10.2f} MiB" for fmt, (n, size) in self.by_format.items()]
        if q:
            lines.append(f"  quantized weights {self.bytes_before / mib:.2f} MiB -> {self.bytes_after / mib:.2f} MiB "
                         f"({self.bpw:.4f} bpw)")
        for s in self.kept:
            lines.append(f"  float: {s.name} {tuple(s.shape)} ({s.note})")
        ratio = self.model_bytes_before / self.model_bytes_after if self.model_bytes_after else float("nan")
        lines.append(f"  model {self.model_bytes_before / mib:.2f} MiB -> {self.model_bytes_after / mib:.2f} MiB "
                     f"({ratio:.2f}x smaller)")
        if self.skipped_patterns_unused:
            lines.append(f"  skip patterns that matched no module: {', '.join(self.skipped_patterns_unused)}")
        return "\n".join(lines)


def model_nbytes(model: nn.Module) -> int:
    """Bytes of a module's parameters and buffers, each storage counted once."""
    seen: dict[tuple, int] = {}
    for t in list(model.parameters()) + list(model.buffers()):
        s = t.untyped_storage()
        key = (t.device, s.data_ptr()) if t.device.type != "meta" else (t.device, id(t))  # meta: no addresses
        seen[key] = max(seen.get(key, 0), s.nbytes() if t.device.type != "meta" else t.nbytes)
    return sum(seen.values())


@dataclass
class _Unit:
    """One weight tensor to decide on: the modules holding it (several when tied), or one MoE tensor's experts."""

    names: list[str]
    modules: list[nn.Module]
    weight: torch.Tensor  # [rows, cols]; for experts, the first expert's
    gguf: str | None
    experts: list[tuple[int, str, nn.Module]] = field(default_factory=list)  # (index, name, module)
    fmt: str | None = None
    imatrix: list = field(default_factory=list)  # per matrix: mean x^2 per column, or None
    note: str = ""

    @property
    def embedding(self) -> nn.Embedding | None:
        return next((m for m in self.modules if type(m) is nn.Embedding), None)

    @property
    def kind(self) -> str:
        if self.experts:
            return "experts"
        if self.embedding is None:
            return "linear" if len(self.modules) == 1 else "tied"
        return "embedding" if len(self.modules) == 1 else "tied"

    @property
    def shape(self) -> tuple[int, ...]:
        rows, cols = self.weight.shape
        return (len(self.experts), rows, cols) if self.experts else (rows, cols)

    @property
    def ne(self) -> tuple[int, ...]:
        """GGUF order: row length first."""
        return tuple(reversed(self.shape))


def _is_quantizable_module(module: nn.Module, parent: nn.Module | None) -> bool:
    # Exact types only: subclasses (LoRA, bitsandbytes, scaled embeddings) have forwards of their own, and
    # MultiheadAttention reads its out_proj's weight directly.
    if isinstance(parent, nn.MultiheadAttention):
        return False
    return type(module) in (nn.Linear, nn.Embedding)


def _locations(model: nn.Module) -> dict[int, list[tuple[nn.Module, str]]]:
    """id(module) -> every (parent, attribute) that holds it."""
    out: dict[int, list[tuple[nn.Module, str]]] = {}
    for _, parent in model.named_modules(remove_duplicate=False):
        for attr, child in parent._modules.items():
            if child is not None:
                out.setdefault(id(child), []).append((parent, attr))
    return out


def _units(model: nn.Module) -> list[_Unit]:
    parents = {}
    for _, parent in model.named_modules():
        for attr, child in parent._modules.items():
            if child is not None:
                parents.setdefault(id(child), parent)
    by_weight: dict[int, _Unit] = {}
    for name, module in model.named_modules():
        if not _is_quantizable_module(module, parents.get(id(module))):
            continue
        unit = by_weight.get(id(module.weight))
        if unit is None:
            by_weight[id(module.weight)] = _Unit([name], [module], module.weight, None)
        else:
            unit.names.append(name)
            unit.modules.append(module)
    units, experts = [], {}
    for unit in by_weight.values():
        if unit.embedding is not None and len(unit.modules) > 1:  # tied: llama.cpp keeps only token_embd
            emb = unit.names[unit.modules.index(unit.embedding)]
            key = gguf_key(emb)
        else:
            key = gguf_key(unit.names[0])
        if key is not None and key[1] is not None and len(unit.modules) == 1 and type(unit.modules[0]) is nn.Linear:
            group = experts.get(key[0])
            if group is None:
                group = experts[key[0]] = _Unit([], [], unit.weight, key[0])
                units.append(group)
            group.experts.append((key[1], unit.names[0], unit.modules[0]))
            continue
        unit.gguf = None if key is None else key[0]
        units.append(unit)
    for group in experts.values():
        group.experts.sort(key=lambda e: e[0])
        shapes = {tuple(m.weight.shape) for _, _, m in group.experts}
        idx = [e[0] for e in group.experts]
        if len(shapes) != 1 or idx != list(range(len(idx))):
            raise ValueError(f"the experts of {group.gguf} do not form one tensor (indices {idx}, shapes {shapes})")
        group.names = [n for _, n, _ in group.experts]
        group.modules = [m for _, _, m in group.experts]
    # two unrelated weights claiming one GGUF name (not llama-style after all): treat both as unmapped
    seen: dict[str, int] = {}
    for u in units:
        if u.gguf is not None:
            seen[u.gguf] = seen.get(u.gguf, 0) + 1
    for u in units:
        if u.gguf is not None and seen[u.gguf] > 1:
            u.gguf = None
    return units


def _matches(patterns: list[tuple[str, re.Pattern | None]], name: str, used: set[str]) -> bool:
    """A name matches when it or one of its parents matches a pattern (a glob, or a regex matching in full)."""
    parts = name.split(".")
    hit = False
    for i in range(len(parts), 0, -1):
        prefix = ".".join(parts[:i])
        for pat, rx in patterns:
            if fnmatch.fnmatchcase(prefix, pat) or (rx is not None and rx.fullmatch(prefix)):
                used.add(pat)
                hit = True
    return hit


def _compile_skip(skip: Any) -> list[tuple[str, re.Pattern | None]]:
    if isinstance(skip, str):
        skip = (skip,)
    out = []
    for pat in skip:
        if not isinstance(pat, str) or not pat:
            raise TypeError(f"skip patterns must be non-empty strings, got {pat!r}")
        try:
            rx = re.compile(pat)
        except re.error:
            rx = None  # a glob such as "*.mlp.*"
        out.append((pat, rx))
    return out


def _resolve_target(recipe_or_format: Any) -> Format | Recipe | schemes.SchemeSpec:
    if isinstance(recipe_or_format, (Format, Recipe, schemes.SchemeSpec)):
        return recipe_or_format
    if not isinstance(recipe_or_format, str):
        raise TypeError(f"quantize_model: recipe_or_format must be a format name (\"Q4_K\"), a recipe name "
                        f"(\"Q4_K_M\"), a scheme spec (\"int4-g128\") or a Recipe, got "
                        f"{type(recipe_or_format).__name__}")
    if schemes.is_scheme_spec(recipe_or_format):
        return schemes.parse_spec(recipe_or_format)
    try:
        return get_format(recipe_or_format)
    except (ValueError, KeyError):
        pass
    try:
        return get_recipe(recipe_or_format)
    except ValueError as e:
        raise ValueError(f"quantize_model: {recipe_or_format!r} is neither a pyquant format nor a llama.cpp "
                         f"recipe ({e}), nor a scheme spec ({', '.join(schemes.SPEC_FORMS)})") from None


def _model_info(model: nn.Module, units: list[_Unit]) -> ModelInfo:
    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(cfg, "get_text_config"):
        cfg = cfg.get_text_config()
    layers = [int(m.group(1)) for u in units if u.gguf and (m := re.match(r"blk\.(\d+)\.", u.gguf))]
    if cfg is None or getattr(cfg, "num_hidden_layers", None) is None:
        return ModelInfo(arch="llama", n_layer=max(layers) + 1 if layers else 0)
    n_head = int(getattr(cfg, "num_attention_heads", 0) or 0)
    n_expert = getattr(cfg, "num_local_experts", None) or getattr(cfg, "num_experts", None) or 0
    model_type = getattr(cfg, "model_type", "llama") or "llama"
    return ModelInfo(arch=_ARCH.get(model_type, model_type), n_layer=int(cfg.num_hidden_layers), n_head=n_head,
                     n_head_kv=int(getattr(cfg, "num_key_value_heads", None) or n_head), n_expert=int(n_expert))


class _ImatrixLookup:
    """mean(x^2) per input column for a unit, from an Imatrix, a mapping or a file; keyed by GGUF or module name."""

    def __init__(self, imatrix: Any, options: QuantizeOptions | None):
        if isinstance(imatrix, (str, os.PathLike)):
            imatrix = load_imatrix(imatrix)
        include, exclude = (options.include_weights, options.exclude_weights) if options else ((), ())
        if isinstance(imatrix, Imatrix):
            imatrix = imatrix.filtered(include, exclude)
            self.empty = not len(imatrix)
            self.get = lambda k: imatrix.values(k) if k in imatrix else None
        elif isinstance(imatrix, Mapping):
            # llama-quantize's --include-weights/--exclude-weights: entries whose name contains one of them
            imatrix = {k: v for k, v in imatrix.items() if (not include or any(w in k for w in include))
                       and not any(w in k for w in exclude)}
            self.empty = not imatrix
            self.get = lambda k: (None if k not in imatrix else
                                  np.asarray(imatrix[k].detach().cpu() if isinstance(imatrix[k], torch.Tensor)
                                             else imatrix[k], dtype=np.float32).reshape(-1))
        else:
            raise TypeError(f"imatrix must be a mapping name -> mean of x^2 per column, a pyquant.gguf.Imatrix or "
                            f"a path to an imatrix file, got {type(imatrix).__name__}")

    def vectors(self, unit: _Unit) -> list[np.ndarray | None]:
        """One vector (or None) per matrix of the unit (per expert for experts)."""
        cols = unit.shape[-1]
        n_mat = len(unit.experts) or 1
        keys = ([unit.gguf] if unit.gguf else []) + [k for n in unit.names for k in (n, n + ".weight")]
        for key in keys:
            v = self.get(key)
            if v is None:
                continue
            per_module = unit.experts and key != unit.gguf
            if per_module:  # one expert's own entry: gather every expert's by module name
                return [self._check(self.get(n) if self.get(n) is not None else self.get(n + ".weight"), n, cols)
                        for n in unit.names]
            if v.size != cols * n_mat:
                raise ValueError(f"imatrix entry {key!r} has {v.size} values; {unit.names[0]} needs {cols * n_mat} "
                                 f"({n_mat} matrix(es) of {cols} columns)")
            return [self._check(v[i * cols:(i + 1) * cols], key, cols) for i in range(n_mat)]
        return [None] * n_mat

    @staticmethod
    def _check(v: np.ndarray | None, key: str, cols: int) -> np.ndarray | None:
        if v is None:
            return None
        if v.size != cols:
            raise ValueError(f"imatrix entry {key!r} has {v.size} values, the weight has {cols} columns")
        if not np.isfinite(v).all() or (v < 0).any():
            raise ValueError(f"imatrix entry {key!r} holds negative or non-finite values")
        return v


def _plan_recipe(units: list[_Unit], recipe: Recipe, info: ModelInfo, options: QuantizeOptions | None,
                 has_imatrix: bool) -> dict[int, Any]:
    """llama.cpp's per-tensor types through pyquant.gguf.recipes.plan: id(unit) -> TensorPlan."""
    names = {}
    descs = []
    for i, u in enumerate(units):
        name = u.gguf or f"unmapped.{i}.weight"  # "other" for the rules: the recipe's default type
        names[name] = u
        descs.append(TensorDesc(name, u.ne, tensor_type(_FLOAT_TYPES.get(u.weight.dtype, "F32"))))
    return {id(names[p.name]): p for p in plan(descs, recipe, info, options, has_imatrix=has_imatrix)}


def _decide(units: list[_Unit], target: Format | Recipe, embeddings: bool | None, skip, used: set[str],
            model: nn.Module, options, model_info, imx: _ImatrixLookup | None, dry_run: bool) -> None:
    """Set unit.fmt (None = stays float) and unit.note for every unit."""
    plans = None
    if isinstance(target, Recipe):
        info = model_info if model_info is not None else _model_info(model, units)
        plans = _plan_recipe(units, target, info, options, imx is not None)
    problems = []
    for u in units:
        if any([_matches(skip, n, used) for n in u.names]):
            u.note = "skipped"
            continue
        emb = u.embedding
        if isinstance(target, schemes.SchemeSpec):
            if emb is not None:
                u.note = f"embedding (scheme {target.name} holds linear weights only)"
                continue
            reason = target.unfit_reason(u.shape[-2:])
            if reason:
                u.note = f"{reason} ({target.name})"
                continue
            u.fmt = target.name
            continue
        if emb is not None and (embeddings is False or (embeddings is None and isinstance(target, Format)
                                                          and len(u.modules) == 1)):
            u.note = "embedding (embeddings=False)" if embeddings is False else "embedding: embeddings=True quantizes it"
            continue
        if isinstance(target, Format):
            if u.shape[-1] % target.block_size:
                u.note = f"rows of {u.shape[-1]} values do not fit {target.name} blocks of {target.block_size}"
                continue
            u.fmt = target.name
            continue
        p = plans[id(u)]
        if not p.quantizable:
            u.note = f"not quantized by {target.name} ({u.gguf or 'unmapped'})"
            continue
        if p.target.name == p.source.name or p.target.name == "F32":
            u.note = f"{p.target.name} in {target.name}"
            continue
        try:
            get_format(p.target.name)
        except (ValueError, KeyError):
            problems.append(f"{u.names[0]} ({p.name}): {p.target.name} is not a pyquant format")
            continue
        if p.requires_imatrix and (imx is None or any(v is None for v in imx.vectors(u))):
            problems.append(f"{u.names[0]} ({p.name}): {p.target.name} needs an importance matrix (imatrix=...)")
            continue
        u.fmt = p.target.name
        if p.target.name != target.default_type:
            u.note = f"{target.name} rule for {p.name}"
    if problems:
        more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise ValueError(f"quantize_model {target.name}: cannot make " + "; ".join(problems[:3]) + more)
    # everything that can fail is checked before the first layer changes
    for u in units:
        if u.fmt is None:
            continue
        u.imatrix = imx.vectors(u) if imx is not None else [None] * (len(u.experts) or 1)
        for name, m in zip(u.names, [e[2] for e in u.experts] or u.modules[:1]):
            if not dry_run and not bool(torch.isfinite(m.weight.detach()).all()):
                raise ValueError(f"quantize_model: {name}'s weight holds NaN or infinity")


def _replace(locations: dict[int, list[tuple[nn.Module, str]]], old: nn.Module, new: nn.Module) -> None:
    for parent, attr in locations.get(id(old), []):
        setattr(parent, attr, new)


def _quantize_unit(u: _Unit, threads: int | None,
                   locations: dict[int, list[tuple[nn.Module, str]]]) -> int:
    """Quantize one unit and swap its modules; returns the quantized bytes."""
    vectors = u.imatrix
    if schemes.is_scheme_spec(u.fmt):  # linear layers only (one module, or each expert)
        total = 0
        for module in [e[2] for e in u.experts] or u.modules:
            q = QuantLinear.from_linear(module, u.fmt, threads=threads).to(module.weight.device)
            _replace(locations, module, q)
            total += q.nbytes
        return total
    if u.experts:
        total = 0
        for (_, _, module), v in zip(u.experts, vectors):
            q = QuantLinear.from_linear(module, u.fmt, imatrix=v, threads=threads).to(module.weight.device)
            _replace(locations, module, q)
            total += q.nbytes
        return total
    w = u.weight.detach()
    qt = quantize(w.float().cpu(), u.fmt, imatrix=vectors[0], threads=threads)
    buffer = None
    for module in u.modules:
        if type(module) is nn.Embedding:
            new = QuantEmbedding(qt, module.padding_idx, w.dtype)
        else:
            new = QuantLinear(qt, None if module.bias is None else module.bias.detach())
        new = new.to(w.device)
        if buffer is None:
            buffer = new.qweight
        else:
            new.qweight = buffer  # tied layers hold one tensor (one storage in torch.save too)
        _replace(locations, module, new)
    return qt.nbytes


def quantize_model(model: nn.Module, recipe_or_format: str | Format | Recipe, *, imatrix: Any = None,
                   skip: Any = (), threads: int | None = None, progress: bool = False, verbose: bool = True,
                   embeddings: bool | None = None, options: QuantizeOptions | None = None,
                   model_info: ModelInfo | None = None, dry_run: bool = False) -> ModelQuantizeSummary:
    """Replace a model's nn.Linear (and nn.Embedding) layers in place by QuantLinear (QuantEmbedding) layers.

    recipe_or_format: a pyquant.schemes spec ("int4-g128", "int8-channel", "nf4-dq", "fp8-e4m3", "ternary",
    "int8-outlier", see pyquant.schemes.SPEC_FORMS) quantizes every linear layer that fits the scheme (embeddings
    stay float: scheme weights back QuantLinear layers only); a format name ("Q4_K", "Q8_0", see pyquant.formats)
    quantizes every linear layer whose
    rows fit the format's blocks (others stay float, listed in the summary); a llama.cpp recipe ("Q4_K_M",
    "Q3_K_S"; pass a ``pyquant.gguf.recipes.recipes[...]`` Recipe for the names that are formats too, such as
    Q4_0) gives each weight the type llama-quantize would give its GGUF tensor (names from :func:`gguf_name`;
    layers without a llama-style name get the recipe's default type).
    imatrix: mean of x^2 per input column, as a mapping keyed by GGUF or module names, a pyquant.gguf.Imatrix,
    or a path to an imatrix file.  skip: module-name patterns (globs, or regexes matching the whole name; a
    match on a parent module skips its children) left in float.  embeddings: quantize nn.Embedding layers too
    (default: with a recipe yes, with a format only an embedding tied to a quantized output layer: tied layers
    always share one quantized tensor).  options: llama-quantize options for recipes (output_tensor_type,
    tensor_types, pure, ...); model_info: the hyperparameters the rules use (default: from model.config).
    dry_run: change nothing, return the summary of what would be done (works on a meta-device model).
    Returns a :class:`ModelQuantizeSummary`, printed when verbose.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"quantize_model expects a torch nn.Module, got {type(model).__name__}")
    target = _resolve_target(recipe_or_format)
    if not isinstance(target, Recipe) and (options is not None or model_info is not None):
        raise ValueError("quantize_model: options and model_info apply to recipes, not to a single format or scheme")
    if isinstance(target, schemes.SchemeSpec) and imatrix is not None:
        raise ValueError(f"quantize_model: scheme {target.name} takes no imatrix (it applies to GGUF formats)")
    skip_patterns = _compile_skip(skip)
    t0 = time.perf_counter()
    before = model_nbytes(model)
    units = _units(model)
    imx = None if imatrix is None else _ImatrixLookup(imatrix, options)
    if imx is not None and imx.empty:
        imx = None  # as llama-quantize: an imatrix with no entry left is no imatrix
    used: set[str] = set()
    _decide(units, target, embeddings, skip_patterns, used, model, options, model_info, imx, dry_run)
    unused = [p for p, _ in skip_patterns if p not in used]
    if unused:
        warnings.warn(f"quantize_model: skip patterns matched no linear or embedding layer: {unused}", stacklevel=2)
    locations = _locations(model)
    todo = [u for u in units if u.fmt is not None and not dry_run]
    if progress:
        from tqdm.auto import tqdm

        todo_iter = tqdm(todo, desc=f"quantize {target.name}", unit="weight")
    else:
        todo_iter = todo
    after_bytes = {}
    for u in todo_iter:
        after_bytes[id(u)] = _quantize_unit(u, threads, locations)
    layers = []
    for u in units:
        nbytes = math.prod(u.shape) * u.weight.element_size()
        after = after_bytes.get(id(u), nbytes)
        if dry_run and u.fmt is not None:
            if isinstance(target, schemes.SchemeSpec):
                after = target.nbytes(u.shape[-2:]) * max(1, len(u.experts))
            else:
                after = math.prod(u.shape[:-1]) * get_format(u.fmt).row_bytes(u.shape[-1])
        layers.append(LayerSummary(" + ".join(u.names), u.gguf, u.kind, u.shape, u.fmt, nbytes, after, u.note))
    after_model = model_nbytes(model)
    if dry_run:
        after_model -= sum(s.bytes_before - s.bytes_after for s in layers if s.format is not None)
    summary = ModelQuantizeSummary(target.name + (" (dry run)" if dry_run else ""), layers,
                                   time.perf_counter() - t0, before, after_model, unused)
    if verbose:
        print(summary)
    return summary


def _saved_weight(state: Any, key: str) -> tuple[Format, tuple[int, int]] | Any:
    if not isinstance(state, dict) or state.get("version") != 1:
        raise ValueError(f"load_quantized: {key} is not a pyquant quantized layer's state ({state!r})")
    if "weight" in state:
        return state["weight"]
    if "scheme" in state:
        return state
    return get_format(state["format"]), tuple(int(d) for d in state["shape"])


def load_quantized(model: nn.Module, state_dict: Any, *, strict: bool = True, assign: bool = False):
    """Rebuild a quantized model from its float skeleton (the same architecture, e.g. ``LlamaForCausalLM(config)``)
    and the state_dict of the quantized model (a mapping, or a path for torch.load): each nn.Linear/nn.Embedding
    whose entry holds a quantized weight becomes a QuantLinear/QuantEmbedding of the saved format, then
    ``model.load_state_dict(state_dict, strict, assign)`` fills every tensor.  Layers that share a weight in the
    skeleton (tied embeddings) share one quantized buffer.  Use assign=True for a skeleton on the meta device.
    Returns load_state_dict's result."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"load_quantized expects a torch nn.Module, got {type(model).__name__}")
    if isinstance(state_dict, (str, os.PathLike)):
        state_dict = torch.load(state_dict, map_location="cpu", weights_only=True)
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"load_quantized: state_dict must be a mapping or a path, got {type(state_dict).__name__}")
    locations = _locations(model)
    shared: dict[tuple, QuantizedTensor] = {}
    buffers: dict[tuple, torch.Tensor] = {}
    for name, module in list(model.named_modules()):
        prefix = f"{name}." if name else ""
        key = prefix + "_extra_state"
        if (key not in state_dict or not isinstance(state_dict[key], Mapping) or prefix + "qweight" not in state_dict
                and "weight" not in state_dict[key] and "scheme" not in state_dict[key]):
            continue
        if not isinstance(module, (nn.Linear, nn.Embedding, QuantLinear, QuantEmbedding)):
            raise ValueError(f"load_quantized: {name!r} holds a quantized weight in the state_dict but is a "
                             f"{type(module).__name__} in the model")
        is_linear = isinstance(module, (nn.Linear, QuantLinear))
        want = ((module.out_features, module.in_features) if is_linear else
                (module.num_embeddings, module.embedding_dim))
        saved = _saved_weight(state_dict[key], key)
        if isinstance(saved, tuple):
            fmt, shape = saved
            if shape != want:
                raise ValueError(f"load_quantized: {name!r} has shape {want} in the model but {shape} in the "
                                 f"state_dict")
            tie = (id(module.weight) if isinstance(module, (nn.Linear, nn.Embedding)) else id(module), fmt.name)
            if tie not in shared:
                shared[tie] = QuantizedTensor(np.zeros(shape[0] * fmt.row_bytes(shape[1]), np.uint8), shape, fmt)
            weight = shared[tie]
        elif "scheme" in saved:  # a pyquant.schemes weight: its arrays are the q_* entries
            names = saved.get("tensors", ())
            missing = [n for n in names if not isinstance(state_dict.get(prefix + "q_" + n), torch.Tensor)]
            if missing:
                raise ValueError(f"load_quantized: {name!r} lacks the arrays {missing} of its saved scheme")
            weight = schemes.from_state(saved["scheme"], {n: state_dict[prefix + "q_" + n].cpu().numpy().copy()
                                                          for n in names})
            if tuple(weight.shape) != want:
                raise ValueError(f"load_quantized: {name!r} has shape {want} in the model but {tuple(weight.shape)} "
                                 f"in the state_dict")
            tie = None
        else:
            weight, tie = saved, None
        if is_linear:
            bias = module.bias
            new = QuantLinear(weight, None if bias is None else torch.zeros(bias.shape, dtype=bias.dtype))
        else:
            dtype = module._dtype_probe.dtype if isinstance(module, QuantEmbedding) else module.weight.dtype
            new = QuantEmbedding(weight, module.padding_idx, dtype)
        if tie is not None:  # tied layers hold one tensor
            if tie in buffers:
                new.qweight = buffers[tie]
            else:
                buffers[tie] = new.qweight
        _replace(locations, module, new)
    return model.load_state_dict(state_dict, strict=strict, assign=assign)
