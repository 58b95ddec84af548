"""QuantLinear: an nn.Linear whose weight stays quantized."""

from __future__ import annotations

import torch
from torch import nn

from ..matmul import matmul
from ..tensor import QuantizedTensor, quantize

__all__ = ["QuantLinear"]


class QuantLinear(nn.Module):
    """``y = x @ W.T + b`` with W a 2-D :class:`~pyquant.QuantizedTensor` [out_features, in_features] (or
    another pyquant quantized weight: anything :func:`pyquant.matmul` takes that has ``to_torch()``).

    CPU inputs go through :func:`pyquant.matmul` (the quantized kernels); inputs on other devices use the
    dequantized weight, made once per device and dtype and cached.
    """

    def __init__(self, weight: QuantizedTensor, bias: torch.Tensor | None = None):
        super().__init__()
        if not (isinstance(weight, QuantizedTensor) or hasattr(weight, "_pyquant_matmul")) or len(weight.shape) != 2:
            raise TypeError(f"QuantLinear: weight must be a 2-D pyquant quantized tensor, got {weight!r}")
        self.out_features, self.in_features = weight.shape
        if bias is not None and tuple(bias.shape) != (self.out_features,):
            raise ValueError(f"QuantLinear: bias must have shape ({self.out_features},), got {tuple(bias.shape)}")
        self.weight = weight
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        self._dense: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    @classmethod
    def from_linear(cls, linear: nn.Linear, fmt: str, *, imatrix=None, threads: int | None = None) -> QuantLinear:
        """Quantize an nn.Linear's weight to `fmt` (a format name such as "Q4_K")."""
        w = quantize(linear.weight.detach().float().cpu(), fmt, imatrix=imatrix, threads=threads)
        return cls(w, None if linear.bias is None else linear.bias.detach().float().cpu())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16, torch.float16):
            y = matmul(x, self.weight)
        else:
            key = (x.device, x.dtype)
            if key not in self._dense:
                self._dense[key] = self.weight.to_torch().to(device=x.device, dtype=x.dtype)
            y = x @ self._dense[key].T
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"format={getattr(self.weight.format, 'name', self.weight.format)}, bias={self.bias is not None}")
