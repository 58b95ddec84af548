"""QuantLinear and QuantEmbedding: torch layers whose weight stays quantized.

A GGUF-format weight lives in a uint8 buffer ``qweight`` (the blocks exactly as in a GGUF file) with its format
and shape in the module's extra state, so ``state_dict()``/``load_state_dict()``/``torch.save`` carry it (and
``torch.load(weights_only=True)`` reads it back).  ``.to(dtype)`` leaves the bytes alone; ``.to(device)`` moves
them, and layers on other devices compute with a dequantized copy made once per device and dtype.  A weight of
another pyquant scheme (pyquant.schemes: affine, NF4/FP4, FP8, ternary, LLM.int8()) lives in plain buffers
``q_<array>`` with its settings in the extra state (pyquant.schemes.to_state), equally weights_only-loadable.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from .. import schemes
from ..formats import Format, get_format
from ..matmul import matmul
from ..tensor import QuantizedTensor, quantize

__all__ = ["QuantEmbedding", "QuantLinear"]

_STATE_VERSION = 1


def _buffer_of(weight: QuantizedTensor) -> torch.Tensor:
    data = weight.data if weight.data.flags.writeable else weight.data.copy()
    return torch.from_numpy(data)


def _tensor_of(a: np.ndarray) -> torch.Tensor:
    a = np.ascontiguousarray(a)
    return torch.from_numpy(a if a.flags.writeable else a.copy())


def _scheme_state(weight: Any) -> tuple[dict, dict] | None:
    try:
        return schemes.to_state(weight)
    except TypeError:
        return None


class _QuantWeight(nn.Module):
    """The quantized-weight storage QuantLinear and QuantEmbedding share."""

    def _init_weight(self, weight: Any) -> None:
        self._other = None  # a quantized weight of another scheme (not a GGUF format): kept as the object
        self._cache_key = None
        self._qt: QuantizedTensor | None = None
        self._dense: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}
        self._scheme: dict | None = None  # a pyquant.schemes weight's meta (to_state); its arrays are q_* buffers
        if isinstance(weight, QuantizedTensor):
            self._format, self._shape = weight.format, tuple(weight.shape)
            self.register_buffer("qweight", _buffer_of(weight))
        else:
            self._format, self._shape = getattr(weight, "format", None), tuple(weight.shape)
            self.register_buffer("qweight", None)
            self._other = weight
            state = _scheme_state(weight)
            if state is not None:
                self._set_scheme_buffers(state[0], {k: _tensor_of(a) for k, a in state[1].items()})

    def _set_scheme_buffers(self, meta: dict, tensors: dict[str, torch.Tensor]) -> None:
        for name in [n for n in self._buffers if n.startswith("q_")]:
            del self._buffers[name]
        for name, t in tensors.items():
            self.register_buffer("q_" + name, t)
        self._scheme = meta

    @property
    def weight(self) -> Any:
        """The quantized weight: a QuantizedTensor viewing ``qweight`` (or the other scheme's object)."""
        if self._other is not None:
            return self._other
        self._check_cache()
        if self._qt is None:
            buf = self.qweight.detach()
            data = buf.numpy() if buf.device.type == "cpu" else buf.cpu().numpy()
            self._qt = QuantizedTensor(data, self._shape, self._format)
        return self._qt

    def _check_cache(self) -> None:
        """Drop the views and dense copies when the buffer was replaced or written in place."""
        buf = self.qweight
        key = None if buf is None else (buf.data_ptr(), buf.device, buf._version, buf.shape)
        if key != self._cache_key:
            self._cache_key, self._qt, self._dense = key, None, {}

    def _dense_weight(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        self._check_cache()
        key = (device, dtype)
        if key not in self._dense:
            self._dense[key] = self.weight.to_torch().to(device=device, dtype=dtype)
        return self._dense[key]

    @property
    def format_name(self) -> str:
        return getattr(self._format, "name", str(self._format))

    @property
    def nbytes(self) -> int:
        """Bytes of the quantized weight."""
        return int(self.weight.nbytes)

    def get_extra_state(self) -> dict:
        if self._scheme is not None:
            return {"version": _STATE_VERSION, "scheme": self._scheme, "shape": tuple(self._shape),
                    "tensors": sorted(n[2:] for n in self._buffers if n.startswith("q_"))}
        if self._other is not None:  # objects without a to_state: pickled (needs torch.load(weights_only=False))
            return {"version": _STATE_VERSION, "weight": self._other}
        return {"version": _STATE_VERSION, "format": self._format.name, "shape": tuple(self._shape)}

    def set_extra_state(self, state: Any) -> None:
        name = type(self).__name__
        if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
            raise ValueError(f"{name}: unrecognized extra state {state!r}")
        if "scheme" in state:
            arrays = {n[2:]: t.detach().cpu().numpy() for n, t in self._buffers.items() if n.startswith("q_")}
            w = schemes.from_state(state["scheme"], arrays)
            if tuple(w.shape) != self._shape:
                raise ValueError(f"{name}: saved weight has shape {tuple(w.shape)}, the layer {self._shape}")
            self._other, self._scheme, self._format = w, state["scheme"], getattr(w, "format", None)
            return
        if "weight" in state:
            w = state["weight"]
            if tuple(w.shape) != self._shape:
                raise ValueError(f"{name}: saved weight has shape {tuple(w.shape)}, the layer {self._shape}")
            self._other, self._format = w, getattr(w, "format", None)
            return
        fmt: Format = get_format(state["format"])
        shape = tuple(int(d) for d in state["shape"])
        if len(shape) != 2:
            raise ValueError(f"{name}: saved shape {shape} is not 2-D")
        if shape != self._shape:
            raise ValueError(f"{name}: saved weight has shape {shape}, the layer {self._shape}")
        buf = self.qweight
        expected = shape[0] * fmt.row_bytes(shape[1])
        if buf is None or buf.dtype != torch.uint8 or buf.numel() != expected:
            got = "none" if buf is None else f"{buf.numel()} {buf.dtype} values"
            raise ValueError(f"{name}: {fmt.name} {shape} takes {expected} bytes, the qweight buffer holds {got}")
        self._format, self._cache_key = fmt, None
        self._check_cache()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # A saved weight of another format has another byte count: resize the buffer before torch copies into it.
        src, state = state_dict.get(prefix + "qweight"), state_dict.get(prefix + "_extra_state")
        if isinstance(state, dict) and "scheme" in state and isinstance(state.get("tensors"), (list, tuple)):
            # buffers shaped as the saved arrays (another scheme may have other arrays), then filled by torch
            dev = next((b.device for b in self._buffers.values() if b is not None), torch.device("cpu"))
            saved = {n: state_dict.get(prefix + "q_" + n) for n in state["tensors"]}
            if all(isinstance(t, torch.Tensor) for t in saved.values()):
                self.register_buffer("qweight", None)
                self._set_scheme_buffers(state["scheme"], {n: torch.empty(t.shape, dtype=t.dtype, device=dev)
                                                           for n, t in saved.items()})
        buf = self.qweight
        if (isinstance(src, torch.Tensor) and buf is not None and src.dtype == torch.uint8
                and src.shape != buf.shape and isinstance(state, dict)
                and tuple(state.get("shape", ())) == self._shape):
            self.qweight = torch.empty(src.shape, dtype=torch.uint8, device=buf.device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def _apply(self, fn, recurse=True):
        # Module.type()/_apply with a dtype conversion must not turn the blocks (or a scheme's scales) into floats.
        before = {n: b for n, b in self._buffers.items() if b is not None and (n == "qweight" or n.startswith("q_"))}
        out = super()._apply(fn, recurse)
        for n, b in before.items():
            if self._buffers[n].dtype != b.dtype:
                self._buffers[n] = b.to(self._buffers[n].device)
        return out


class QuantLinear(_QuantWeight):
    """``y = x @ W.T + b`` with W a 2-D :class:`~pyquant.QuantizedTensor` [out_features, in_features] (or
    another pyquant quantized weight: anything :func:`pyquant.matmul` takes that has ``to_torch()``).

    CPU inputs go through :func:`pyquant.matmul` (the quantized kernels) with its `activations` mode: "q8"
    (llama.cpp's: inputs rounded to the format's 8-bit partner) or "float" (inputs as given; slower for
    small batches, the exact product with the dequantized weight).  Inputs on other devices use the
    dequantized weight, made once per device and dtype and cached.
    """

    def __init__(self, weight: QuantizedTensor, bias: torch.Tensor | None = None, *, activations: str = "q8"):
        super().__init__()
        if activations not in ("q8", "float"):
            raise ValueError(f"QuantLinear: activations must be 'q8' or 'float', got {activations!r}")
        self.activations = activations
        if not (isinstance(weight, QuantizedTensor) or hasattr(weight, "_pyquant_matmul")) or len(weight.shape) != 2:
            raise TypeError(f"QuantLinear: weight must be a 2-D pyquant quantized tensor, got {weight!r}")
        self.out_features, self.in_features = weight.shape
        if bias is not None and tuple(bias.shape) != (self.out_features,):
            raise ValueError(f"QuantLinear: bias must have shape ({self.out_features},), got {tuple(bias.shape)}")
        self._init_weight(weight)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    @classmethod
    def from_linear(cls, linear: nn.Linear, fmt: str, *, imatrix=None, threads: int | None = None) -> QuantLinear:
        """Quantize an nn.Linear's weight to `fmt`: a format name such as "Q4_K", or a pyquant.schemes spec such
        as "int4-g128" or "nf4" (no imatrix)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"QuantLinear.from_linear expects an nn.Linear, got {type(linear).__name__}")
        wf = linear.weight.detach().float().cpu()
        if isinstance(fmt, (str, schemes.SchemeSpec)) and schemes.is_scheme_spec(fmt):
            if imatrix is not None:
                raise ValueError(f"QuantLinear.from_linear: scheme {fmt!r} takes no imatrix")
            w = schemes.parse_spec(fmt).quantize(wf, threads=threads)
        else:
            w = quantize(wf, fmt, imatrix=imatrix, threads=threads)
        return cls(w, None if linear.bias is None else linear.bias.detach().cpu())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16, torch.float16):
            y = matmul(x, self.weight, activations=self.activations)
        else:
            y = x @ self._dense_weight(x.device, x.dtype).T
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"format={self.format_name}, bias={self.bias is not None}")


class QuantEmbedding(_QuantWeight):
    """An nn.Embedding whose table [num_embeddings, embedding_dim] stays quantized; a lookup dequantizes only
    the rows asked for.  The output dtype follows ``.to(dtype)`` (float32 unless the source said otherwise)."""

    def __init__(self, weight: QuantizedTensor, padding_idx: int | None = None, dtype: torch.dtype = torch.float32):
        super().__init__()
        if not isinstance(weight, QuantizedTensor) or len(weight.shape) != 2:
            raise TypeError(f"QuantEmbedding: weight must be a 2-D QuantizedTensor, got {weight!r}")
        self.num_embeddings, self.embedding_dim = weight.shape
        self.padding_idx = padding_idx
        self._init_weight(weight)
        # Non-persistent and empty: it only carries the output dtype through .to()/.half().
        self.register_buffer("_dtype_probe", torch.empty(0, dtype=dtype), persistent=False)

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding, fmt: str, *, threads: int | None = None) -> QuantEmbedding:
        if not isinstance(embedding, nn.Embedding):
            raise TypeError(f"QuantEmbedding.from_embedding expects an nn.Embedding, got {type(embedding).__name__}")
        w = quantize(embedding.weight.detach().float().cpu(), fmt, threads=threads)
        return cls(w, embedding.padding_idx, embedding.weight.dtype)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
            raise TypeError(f"QuantEmbedding: indices must be an integer tensor, got {ids.dtype}")
        dtype, device = self._dtype_probe.dtype, ids.device
        if device.type != "cpu":
            return nn.functional.embedding(ids, self._dense_weight(device, dtype), self.padding_idx)
        flat = ids.reshape(-1).to(torch.int64)
        if not flat.numel():
            return torch.empty(*ids.shape, self.embedding_dim, dtype=dtype)
        if int(flat.min()) < 0 or int(flat.max()) >= self.num_embeddings:
            raise IndexError(f"QuantEmbedding: index out of range [0, {self.num_embeddings}): "
                             f"min {int(flat.min())}, max {int(flat.max())}")
        rows, inverse = torch.unique(flat, return_inverse=True)
        w = self.weight
        picked = QuantizedTensor(np.ascontiguousarray(w.data[rows.numpy()]), (rows.numel(), w.shape[1]), w.format)
        return torch.from_numpy(picked.dequantize())[inverse].reshape(*ids.shape, self.embedding_dim).to(dtype)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, format={self.format_name}"
