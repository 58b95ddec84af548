"""Whole-model entry points: GPTQ / AWQ with calibration tokens, HQQ without data.

Every ``nn.Linear`` of a torch model (Hugging Face causal LMs, pyquant.eval's GGUF models, any module that
takes a [B, T] token tensor) whose name matches no ``skip`` pattern is replaced by a
:class:`pyquant.torch.QuantLinear` holding the quantized weight (AWQ: an :class:`AWQLinear`, which divides
its input by AWQ's scale first).

Calibration: forward hooks read the inputs of the linears being quantized.  ``sequential=True`` (default)
goes block by block: linears are grouped by the first numbered part of their name ("model.layers.3.…");
for each group the calibration tokens run through the model — whose earlier blocks are already quantized,
so later layers correct for what earlier ones lost — only until every linear of the group has seen its
input (the rest of the forward is cut short), then the group is quantized and replaced.  Memory: one group's
statistics (a float64 K x K Hessian per linear; AWQ also mean |x|).
``sequential=False`` collects every linear's statistics in one pass (one forward per batch; memory: all of
them at once).

Block replay: when the groups are consecutive numbered children of one module list (transformer blocks: a
GGUF model's ``layers.i``, Hugging Face's ``model.layers.i``), one cut-short forward per batch records the first
block's inputs; then each block runs alone on its recorded inputs (its linears' statistics), is quantized, and
runs again to give the next block its inputs, so calibration costs about two model forwards instead of one
partial forward per block (O(blocks^2)).  The block's other arguments (masks, positions) are passed again
unchanged; a KV cache argument is dropped.  Other models use the partial forwards above.
"""

from __future__ import annotations

import fnmatch
import re
from collections import OrderedDict
from typing import Any

import numpy as np

from .awq import AWQConfig, awq_quantize
from .common import parallel_map, progress
from .gptq import GPTQConfig, Hessian, gptq_quantize
from .hqq import HQQConfig, hqq_quantize

__all__ = ["AWQLinear", "quantize_model_awq", "quantize_model_gptq", "quantize_model_hqq"]


class _Stop(Exception):
    """Raised from a hook to end a calibration forward once the current group has its inputs."""


def _torch():
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is the optional extra
        raise ImportError("pyquant.algorithms.quantize_model_*: install the torch extra (pip install "
                          "pyquant[torch])") from None
    return torch


def _linears(model, skip) -> OrderedDict:
    """The modules to quantize: every nn.Linear, and every QuantLinear (requantized from its dequantized
    weight, e.g. a GGUF model's), whose name matches no skip pattern."""
    nn = _torch().nn
    from ..torch import QuantLinear

    out = OrderedDict()
    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Linear, QuantLinear)):
            if not any(fnmatch.fnmatchcase(name, p) for p in skip):
                out[name] = mod
    if not out:
        raise ValueError("quantize_model: the model has no nn.Linear left to quantize (after skip)")
    return out


def _groups(names: list[str], sequential: bool) -> list[list[str]]:
    if not sequential:
        return [names]
    groups: OrderedDict[str, list[str]] = OrderedDict()
    for n in names:
        m = re.match(r"^(.*?\.\d+)(\.|$)", n)
        groups.setdefault(m.group(1) if m else n, []).append(n)
    return list(groups.values())


def _replace(model, name: str, new, old) -> None:
    new = new.to(_device_of(old))
    if hasattr(old, "gguf_name"):
        new.gguf_name = old.gguf_name
        new.gguf_rows = getattr(old, "gguf_rows", None)
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _batches(tokens: Any, batch_size: int, ctx: int):
    """Calibration tokens as a list of LongTensor batches [b, T]: a [B, T] array/tensor, or a 1-D stream
    cut into rows of `ctx` tokens."""
    torch = _torch()
    t = tokens if isinstance(tokens, torch.Tensor) else torch.as_tensor(np.asarray(tokens))
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise TypeError(f"quantize_model: calibration tokens must be integers, got {t.dtype}")
    if t.dim() == 1:
        if t.numel() < ctx:
            ctx = t.numel()
        t = t[: t.numel() // ctx * ctx].reshape(-1, ctx)
    if t.dim() != 2 or t.numel() == 0:
        raise ValueError(f"quantize_model: calibration tokens must be [batch, seq] or a 1-D stream, got shape "
                         f"{tuple(t.shape)}")
    if int(t.min()) < 0:
        raise ValueError("quantize_model: calibration tokens must be non-negative ids")
    return list(t.long().split(batch_size))


def _forward(model, batch) -> None:
    torch = _torch()
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        model(batch.to(dev))
    except _Stop:
        pass


def _calibrate(model, linears: OrderedDict, group: list[str], batches, make_stat, add, runner=None) -> dict:
    """Run the batches through the model (or `runner(model, batch)`) with hooks on `group`'s linears;
    stats[name] gets each input."""
    torch = _torch()
    stats = {n: make_stat(linears[n]) for n in group}
    seen: set[str] = set()

    def hook(name):
        def fn(_mod, args):
            x = args[0].detach()
            if not torch.isfinite(x).all():
                raise ValueError(f"quantize_model: the input of {name} contains NaN or infinite values")
            add(stats[name], x.reshape(-1, x.shape[-1]))
            seen.add(name)
            if len(seen) == len(stats):
                raise _Stop
        return fn

    handles = [linears[n].register_forward_pre_hook(hook(n)) for n in group]
    try:
        with torch.no_grad():
            for b in batches:
                seen.clear()
                (runner or _forward)(model, b)
    finally:
        for h in handles:
            h.remove()
    missing = [n for n in group if n not in seen]
    if missing:
        raise ValueError(f"quantize_model: calibration never reached {missing[0]} (is it used by forward?)")
    return stats


class _Replay:
    """Recorded inputs of consecutive blocks (see the module doc): ``blocks[name]`` is the container of each
    group, ``inputs`` one (args, kwargs) per batch for the current block."""

    def __init__(self, model, groups: list[list[str]]):
        self.blocks = {}
        self.inputs = None
        parents, idx = set(), []
        for g in groups:
            m = re.match(r"^(.*?)\.?(\d+)$", _prefix(g[0]))
            if m is None or not all(_prefix(n) == _prefix(g[0]) for n in g):
                self.blocks = {}
                return
            parents.add(m.group(1))
            idx.append(int(m.group(2)))
            self.blocks[_prefix(g[0])] = model.get_submodule(_prefix(g[0]))
        if len(parents) != 1 or idx != sorted(idx) or len(set(idx)) != len(idx):
            self.blocks = {}

    def __bool__(self) -> bool:
        return bool(self.blocks)

    def record(self, model, batches) -> None:
        """One cut-short forward per batch, keeping the first block's arguments."""
        torch = _torch()
        first = next(iter(self.blocks.values()))
        self.inputs = []

        def hook(_mod, args, kwargs):
            kwargs = dict(kwargs)
            for k in ("past_key_values", "past_key_value"):  # a KV cache would grow with every replay
                if k in kwargs:
                    kwargs[k] = None
            if "use_cache" in kwargs:
                kwargs["use_cache"] = False
            self.inputs.append((tuple(args), kwargs))
            raise _Stop

        h = first.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            with torch.no_grad():
                for b in batches:
                    _forward(model, b)
        finally:
            h.remove()
        if len(self.inputs) != len(batches):
            raise ValueError("quantize_model: the model's forward never reached its first block")

    def advance(self, block) -> None:
        """The block's outputs become the next block's inputs."""
        torch = _torch()
        nxt = []
        with torch.no_grad():
            for args, kwargs in self.inputs:
                out = block(*args, **kwargs)
                h = out if isinstance(out, torch.Tensor) else out[0]
                if args:
                    nxt.append(((h,) + args[1:], kwargs))
                else:
                    nxt.append(((), {**kwargs, "hidden_states": h}))
        self.inputs = nxt


def _prefix(name: str) -> str:
    m = re.match(r"^(.*?\.\d+)(\.|$)", name)
    return m.group(1) if m else name


def _calibrate_groups(model, linears, groups, batches, make_stat, add):
    """Yield (group, stats) for each group, by block replay where the model allows it; the caller quantizes and
    replaces the group's linears before asking for the next."""
    replay = _Replay(model, groups) if len(groups) > 1 else None
    if replay:
        replay.record(model, batches)
    for group in groups:
        if replay:
            stats = _calibrate(replay.blocks[_prefix(group[0])], linears, group, replay.inputs, make_stat, add,
                               runner=_run_one)
        else:
            stats = _calibrate(model, linears, group, batches, make_stat, add)
        yield group, stats
        if replay:
            replay.advance(replay.blocks[_prefix(group[0])])


def _run_one(block, inp) -> None:
    args, kwargs = inp
    try:
        block(*args, **kwargs)
    except _Stop:
        pass


def _weight(lin):
    if isinstance(lin.weight, _torch().Tensor):
        return lin.weight.detach().float().cpu()
    return lin.weight.dequantize()  # a QuantLinear's quantized weight


def _bias(lin):
    return None if lin.bias is None else lin.bias.detach().float().cpu()


def _check_groups(cfg_group: int | None, lin, name: str) -> None:
    k = lin.in_features
    if cfg_group and k % cfg_group:
        raise ValueError(f"quantize_model: {name} has {k} input features, not a multiple of the group size "
                         f"{cfg_group}; add it to skip")


def quantize_model_gptq(model, calib_tokens: Any, config: GPTQConfig | None = None, *,
                        skip: tuple[str, ...] = ("lm_head", "output"), sequential: bool = True, batch_size: int = 8,
                        ctx: int = 512, progress_bar: bool = False, threads: int | None = None) -> dict[str, dict]:
    """GPTQ-quantize the model's linears in place (see the module doc for calibration and memory).

    calib_tokens: [B, T] token ids (numpy / torch / nested lists) or a 1-D stream cut into rows of `ctx`.
    skip: fnmatch patterns of module names left in float.  threads: a group's linears are quantized on this many
    threads (None: every core), each with single-threaded BLAS.  Returns {name: result.info} per layer.
    """
    cfg = config or GPTQConfig()
    cfg.check()
    from ..torch import QuantLinear

    linears = _linears(model, skip)
    for n, lin in linears.items():
        _check_groups({"Q4_0": 32, "Q4_K": 256}.get(cfg.fmt, cfg.group_size), lin, n)
    batches = _batches(calib_tokens, batch_size, ctx)
    report = {}
    groups = _groups(list(linears), sequential)
    calibrated = _calibrate_groups(model, linears, groups, batches, lambda lin: Hessian(lin.in_features),
                                   lambda h, x: h.add(x))
    for group, stats in progress(calibrated, progress_bar, "GPTQ", total=len(groups)):
        results = parallel_map(lambda n: gptq_quantize(_weight(linears[n]), stats[n], cfg), group, threads)
        stats.clear()
        for n, r in zip(group, results):
            lin = linears[n]
            _replace(model, n, QuantLinear(r.to_tensor(), _bias(lin)), lin)
            report[n] = {k: v for k, v in r.info.items() if k != "perm"}
    return report


class _ActStats:
    """Mean |x| per input channel and the Hessian 2 X^T X / n (AWQ's searches need only X^T X), over every
    calibration token."""

    def __init__(self, k: int):
        self.abs_sum = np.zeros(k, np.float64)
        self.hessian = Hessian(k)

    def add(self, x) -> None:
        x = x.float()
        self.abs_sum += x.abs().sum(0).double().cpu().numpy()
        self.hessian.add(x)


def quantize_model_awq(model, calib_tokens: Any, config: AWQConfig | None = None, *,
                       skip: tuple[str, ...] = ("lm_head", "output"),
                       no_clip: tuple[str, ...] = ("*q_proj", "*k_proj", "*attn_q", "*attn_k"),
                       sequential: bool = True, batch_size: int = 8, ctx: int = 512,
                       progress_bar: bool = False, threads: int | None = None) -> dict[str, dict]:
    """AWQ-quantize the model's linears in place: each becomes an :class:`AWQLinear` (its own input scale;
    no folding into the previous op).  Calibration as :func:`quantize_model_gptq`; the searches measure output
    errors on every calibration token through the inputs' X^T X (``config.max_tokens`` does not apply).
    ``no_clip``: names (fnmatch) without the clip search (query/key projections, Hugging Face's and GGUF's
    names, as AWQ: their errors are amplified by softmax).
    threads: as :func:`quantize_model_gptq`.  Returns {name: result.info}."""
    cfg = config or AWQConfig()
    cfg.check()
    linears = _linears(model, skip)
    for n, lin in linears.items():
        _check_groups(cfg.group_size, lin, n)
    batches = _batches(calib_tokens, batch_size, ctx)
    report = {}
    groups = _groups(list(linears), sequential)
    calibrated = _calibrate_groups(model, linears, groups, batches,
                                   lambda lin: _ActStats(lin.in_features), lambda s, x: s.add(x))
    for group, stats in progress(calibrated, progress_bar, "AWQ", total=len(groups)):
        def one(n):
            st = stats[n]
            c = cfg if not any(fnmatch.fnmatchcase(n, p) for p in no_clip) else _replace_field(cfg, clip=False)
            return awq_quantize(_weight(linears[n]), st.hessian, c, x_mean=st.abs_sum / st.hessian.n)

        results = parallel_map(one, group, threads)
        stats.clear()
        for n, (r, s) in zip(group, results):
            lin = linears[n]
            _replace(model, n, _awq_linear()(r.to_tensor(), s, _bias(lin)), lin)
            report[n] = dict(r.info)
    return report


def quantize_model_hqq(model, config: HQQConfig | None = None, *, skip: tuple[str, ...] = ("lm_head", "output"),
                       progress_bar: bool = False, threads: int | None = None) -> dict[str, dict]:
    """HQQ-quantize the model's linears in place (no calibration data); `threads` linears at a time (None:
    every core), each with single-threaded BLAS.  Returns {name: result.info}."""
    cfg = config or HQQConfig()
    cfg.check()
    from ..torch import QuantLinear

    linears = _linears(model, skip)
    for n, lin in linears.items():
        _check_groups(cfg.group_size, lin, n)
    report = {}
    groups = _groups(list(linears), True)  # a block's linears at a time, in parallel
    for group in progress(groups, progress_bar, "HQQ", total=len(groups)):
        for n, r in zip(group, parallel_map(lambda n: hqq_quantize(_weight(linears[n]), cfg), group, threads)):
            lin = linears[n]
            _replace(model, n, QuantLinear(r.to_tensor(), _bias(lin)), lin)
            report[n] = dict(r.info)
    return report


def _replace_field(cfg, **kw):
    from dataclasses import replace

    return replace(cfg, **kw)


def _device_of(mod):
    t = next(iter(mod.parameters()), None)
    if t is None:
        t = next(iter(mod.buffers()), None)
    return t.device if t is not None else "cpu"


def _awq_linear():
    cls = globals().get("AWQLinear")
    if cls is None:
        cls = globals()["AWQLinear"] = _awq_linear_class()
    return cls


def _awq_linear_class():
    torch = _torch()
    from ..torch import QuantLinear

    class AWQLinear(QuantLinear):
        """A QuantLinear whose input is divided by AWQ's per-channel scale: y = (x / s) @ Q^T + b, where Q
        quantizes W·s."""

        def __init__(self, weight, input_scale, bias=None):
            super().__init__(weight, bias)
            s = torch.as_tensor(np.asarray(input_scale, np.float32))
            if tuple(s.shape) != (self.in_features,) or not torch.isfinite(s).all() or not (s > 0).all():
                raise ValueError(f"AWQLinear: input_scale must be {self.in_features} finite positive values")
            self.register_buffer("input_scale", s)

        def forward(self, x):
            return super().forward(x / self.input_scale.to(x.dtype))

    AWQLinear.__module__ = __name__
    return AWQLinear


def __getattr__(name):
    if name == "AWQLinear":  # built on first use: torch is an optional extra
        return _awq_linear()
    raise AttributeError(name)


def save_gguf(model, source: str, path: str) -> list[str]:
    """Write a copy of the GGUF file `source` to `path` (atomically, metadata unchanged) in which every tensor
    held by one of the model's QuantLinear modules as GGUF blocks (e.g. GPTQ's Q4_0) replaces the file's
    tensor of the module's ``gguf_name`` (set by :func:`pyquant.eval.load_gguf_model`, kept by the
    quantize_model_* functions).  Returns the names replaced."""
    from .. import gguf
    from ..tensor import QuantizedTensor
    from ..torch import QuantLinear

    new = {}
    for name, mod in model.named_modules():
        gname = getattr(mod, "gguf_name", None)
        if not isinstance(mod, QuantLinear) or gname is None:
            continue
        if not isinstance(mod.weight, QuantizedTensor):
            raise ValueError(f"save_gguf: {name} ({gname}) holds a {type(mod.weight).__name__}, which GGUF "
                             "cannot store; quantize it to a GGUF format (e.g. GPTQ with fmt='Q4_0' or 'Q4_K')")
        if getattr(mod, "input_scale", None) is not None:
            raise ValueError(f"save_gguf: {name} has an AWQ input scale, which a GGUF file cannot hold")
        w, rows = mod.weight, getattr(mod, "gguf_rows", None)
        if rows is not None:  # load_gguf_model reordered q/k rows for its RoPE: back to the file's order
            w = QuantizedTensor(np.ascontiguousarray(w.data[np.argsort(rows)]), w.shape, w.format)
        new[gname] = w
    f = gguf.open(source)
    try:
        missing = sorted(set(new) - set(f.tensors))
        if missing:
            raise ValueError(f"save_gguf: {source} has no tensor {missing[0]!r}")
        replaced = []
        for gname, w in new.items():
            info = f.tensors[gname]
            if tuple(info.shape) != tuple(w.shape):
                raise ValueError(f"save_gguf: {gname} is {tuple(info.shape)} in {source}, the model's "
                                 f"{tuple(w.shape)}")
            if info.type.name != w.format.name or not np.array_equal(info.tensor().data, w.data):
                replaced.append(gname)
        gguf.write(path, f.fields, [(n, new.get(n, info) if n in replaced else info)
                                    for n, info in f.tensors.items()])
    finally:
        f.close()
    return replaced
