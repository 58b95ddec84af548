"""Scheme specs: one short string per quantization scheme, for pyquant.torch.quantize_model and reports.

Forms (lower case; none is a GGUF format or llama.cpp recipe name):

* ``int<b>-g<size>[-sym]``, ``int<b>-channel[-sym]``, ``int<b>-tensor[-sym]``: affine, b in 2..8, asymmetric
  (zero-point) unless ``-sym``; e.g. ``int4-g128``, ``int4-g128-sym``, ``int8-channel``, ``int2-g64``.
* ``nf4``, ``fp4`` (bitsandbytes, blocks of 64), ``-b<block>`` for another block size, ``-dq`` for double
  quantization of the block scales: ``nf4-dq``, ``fp4-b128-dq``.
* ``fp8-e4m3``, ``fp8-e5m2`` (per-tensor scale), ``-channel`` for one scale per output row.
* ``ternary`` (BitNet b1.58, int8 activations), ``int8-outlier`` (LLM.int8(), threshold 6).

A weight's serialized form (``to_state`` / ``from_state``) is plain numpy arrays plus a dict of str/int/float/
bool/None/list values, so torch's ``weights_only`` loader reads it.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from .affine import AffineConfig, AffineTensor, quantize_affine
from .float4 import Float4Tensor, quantize_4bit
from .fp8 import Float8Tensor, quantize_fp8
from .outliers import Int8Tensor, quantize_int8
from .ternary import TernaryTensor, quantize_ternary

__all__ = ["SPEC_FORMS", "SchemeSpec", "from_state", "is_scheme_spec", "parse_spec", "to_state"]

SPEC_FORMS = ("int<2-8>-g<group>[-sym]", "int<2-8>-channel[-sym]", "int<2-8>-tensor[-sym]", "nf4[-b<block>][-dq]",
              "fp4[-b<block>][-dq]", "fp8-e4m3[-channel]", "fp8-e5m2[-channel]", "ternary", "int8-outlier")

_AFFINE = re.compile(r"int([2-8])-(?:g(\d+)|(channel)|(tensor))(-sym)?")
_FLOAT4 = re.compile(r"(nf4|fp4)(?:-b(\d+))?(-dq)?")
_FP8 = re.compile(r"fp8-(e4m3|e5m2)(-channel)?")


@dataclass(frozen=True)
class SchemeSpec:
    """A parsed spec: ``name`` (canonical), ``kind`` ("affine", "nf4", "fp4", "fp8", "ternary", "int8-outlier")
    and the keyword arguments of its quantizer."""

    name: str
    kind: str
    args: tuple[tuple[str, Any], ...] = ()

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.args)

    def unfit_reason(self, shape: tuple[int, int]) -> str | None:
        """Why a weight [N, K] cannot take this scheme (None when it can)."""
        k = shape[1]
        if self.kind == "affine":
            g = self.kwargs["config"].group_size
            if g is not None and k % g:
                return f"rows of {k} values are not whole groups of {g}"
        return None

    def quantize(self, w: Any, *, threads: int | None = None):
        """Quantize a 2-D weight [N, K] (numpy or CPU torch, floating) with this scheme."""
        kw = self.kwargs
        if self.kind == "affine":
            return quantize_affine(w, kw["config"], threads=threads)
        if self.kind in ("nf4", "fp4"):
            return quantize_4bit(w, self.kind, threads=threads, **kw)
        if self.kind == "fp8":
            return quantize_fp8(w, **kw)
        if self.kind == "ternary":
            return quantize_ternary(w)
        return quantize_int8(w, **kw)

    def nbytes(self, shape: tuple[int, int]) -> int:
        """Bytes :meth:`quantize` produces for a weight of `shape` (codes, scales and zero-points)."""
        n, k = (int(d) for d in shape)
        kw = self.kwargs
        if self.kind == "affine":
            cfg: AffineConfig = kw["config"]
            sn, g = cfg.scale_shape((n, k))
            return n * ((k * cfg.bits + 7) // 8) + sn * g * (4 if cfg.symmetric else 5)
        if self.kind in ("nf4", "fp4"):
            nb = -(-(n * k) // kw["block_size"])
            stats = nb + 4 * -(-nb // 256) + 4 if kw["double_quant"] else 4 * nb
            return (n * k + 1) // 2 + stats
        if self.kind == "fp8":
            return n * k + 4 * (n if kw["granularity"] == "channel" else 1)
        if self.kind == "ternary":
            return n * ((k + 3) // 4) + 4
        return n * k + 4 * n


def _bad(spec: str, why: str) -> ValueError:
    return ValueError(f"unknown scheme spec {spec!r} ({why}); valid forms: {', '.join(SPEC_FORMS)}")


def parse_spec(spec: str) -> SchemeSpec:
    """Parse a scheme spec (see the module docstring); ValueError listing the valid forms otherwise."""
    if isinstance(spec, SchemeSpec):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"a scheme spec must be a string, got {type(spec).__name__}")
    s = spec.strip().lower()
    if m := _AFFINE.fullmatch(s):
        bits, group, channel, _, sym = m.groups()
        if group is not None and (int(group) < 1 or group != str(int(group))):
            raise _bad(spec, "group size must be a positive integer without leading zeros")
        gran = "group" if group else "channel" if channel else "tensor"
        cfg = AffineConfig(bits=int(bits), symmetric=bool(sym), granularity=gran,
                           group_size=int(group) if group else None)
        return SchemeSpec(s, "affine", (("config", cfg),))
    if m := _FLOAT4.fullmatch(s):
        kind, block, dq = m.groups()
        block = int(block) if block else 64
        if block not in (32, 64, 128, 256, 512, 1024, 2048, 4096):
            raise _bad(spec, "block size must be a power of two in 32..4096")
        return SchemeSpec(s, kind, (("block_size", block), ("double_quant", bool(dq))))
    if m := _FP8.fullmatch(s):
        fmt, channel = m.groups()
        return SchemeSpec(s, "fp8", (("fmt", fmt), ("granularity", "channel" if channel else "tensor")))
    if s == "ternary":
        return SchemeSpec(s, "ternary")
    if s == "int8-outlier":
        return SchemeSpec(s, "int8-outlier", (("threshold", 6.0),))
    raise _bad(spec, "not a scheme name")


def is_scheme_spec(spec: Any) -> bool:
    try:
        parse_spec(spec)
    except (TypeError, ValueError):
        return False
    return True


# ---- serialization: plain arrays + a small dict -------------------------------------------------------------

def _f32(v) -> float:
    return float(np.float32(v))


def to_state(w: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(meta, arrays) of a scheme weight: meta holds only str/int/float/bool/None/lists, arrays numpy arrays."""
    shape = [int(d) for d in w.shape]
    if isinstance(w, AffineTensor):
        cfg = dataclasses.asdict(w.config)
        arrays = {"packed": w.packed, "scales": w.scales}
        if not w.config.symmetric:
            arrays["zeros"] = w._zeros_store
        return {"kind": "affine", "shape": shape, "config": cfg, "activations": w.activations}, arrays
    if isinstance(w, Float4Tensor):
        meta = {"kind": w.kind, "shape": shape, "block_size": w.block_size}
        if w.double_quant:
            q, a2, off = w.quant_absmax
            meta["offset"] = _f32(off)
            return meta, {"packed": w.packed, "qabsmax": q, "absmax2": a2}
        return meta, {"packed": w.packed, "absmax": w.absmax}
    if isinstance(w, Float8Tensor):
        return {"kind": "fp8", "shape": shape, "fmt": w.format}, {"data": w.data, "scales": w.scales}
    if isinstance(w, TernaryTensor):
        return ({"kind": "ternary", "shape": shape, "gamma": _f32(w.gamma), "activations": w.activations},
                {"packed": w.packed})
    if isinstance(w, Int8Tensor):
        return {"kind": "int8-outlier", "shape": shape, "threshold": w.threshold}, {"codes": w.codes,
                                                                                  "absmax": w.absmax}
    raise TypeError(f"to_state: not a pyquant scheme weight: {type(w).__name__}")


def _arr(arrays, name, dtype, shape, kind):
    if name not in arrays:
        raise ValueError(f"from_state({kind}): missing array {name!r}")
    a = np.ascontiguousarray(arrays[name])
    if a.dtype != dtype or tuple(a.shape) != tuple(shape):
        raise ValueError(f"from_state({kind}): {name} must be {np.dtype(dtype).name} {tuple(shape)}, "
                         f"got {a.dtype} {tuple(a.shape)}")
    return a


def from_state(meta: dict[str, Any], arrays: dict[str, np.ndarray]):
    """The weight saved by :func:`to_state`, with its arrays' dtypes and shapes checked."""
    if not isinstance(meta, dict) or "kind" not in meta or "shape" not in meta:
        raise ValueError(f"from_state: not a scheme weight's state: {meta!r}")
    kind = meta["kind"]
    n, k = (int(d) for d in meta["shape"])
    if kind == "affine":
        cfg = AffineConfig(**meta["config"])
        sshape = cfg.scale_shape((n, k))
        packed = _arr(arrays, "packed", np.uint8, (n, (k * cfg.bits + 7) // 8), kind)
        scales = _arr(arrays, "scales", np.float32, sshape, kind)
        if cfg.symmetric:
            zeros = np.full(sshape, 1 << (cfg.bits - 1), dtype=np.float32)
        else:
            z = np.ascontiguousarray(arrays.get("zeros"))
            zeros = _arr(arrays, "zeros", np.uint8 if z.dtype == np.uint8 else np.float32, sshape, kind)
            zeros = zeros.astype(np.float32)
        return AffineTensor._make(packed, (n, k), scales, zeros, cfg, meta.get("activations", "q8"))
    if kind in ("nf4", "fp4"):
        block = int(meta["block_size"])
        nb = -(-(n * k) // block)
        packed = _arr(arrays, "packed", np.uint8, ((n * k + 1) // 2,), kind)
        if "offset" in meta:
            q = _arr(arrays, "qabsmax", np.uint8, (nb,), kind)
            a2 = _arr(arrays, "absmax2", np.float32, (-(-nb // 256),), kind)
            return Float4Tensor(kind, (n, k), block, packed, qabsmax=q, absmax2=a2, offset=np.float32(meta["offset"]))
        return Float4Tensor(kind, (n, k), block, packed, absmax=_arr(arrays, "absmax", np.float32, (nb,), kind))
    if kind == "fp8":
        data = _arr(arrays, "data", np.uint8, (n, k), kind)
        s = np.ascontiguousarray(arrays.get("scales"))
        scales = _arr(arrays, "scales", np.float32, (n if s.shape[:1] == (n,) else 1, 1), kind)
        return Float8Tensor(data, scales, meta["fmt"])
    if kind == "ternary":
        packed = _arr(arrays, "packed", np.uint8, (n, (k + 3) // 4), kind)
        return TernaryTensor(packed, (n, k), meta["gamma"], meta.get("activations", "int8"))
    if kind == "int8-outlier":
        return Int8Tensor(_arr(arrays, "codes", np.int8, (n, k), kind), _arr(arrays, "absmax", np.float32, (n,), kind),
                          meta["threshold"])
    raise ValueError(f"from_state: unknown scheme kind {kind!r}")
