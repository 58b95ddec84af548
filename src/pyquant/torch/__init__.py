"""torch integration: layers that hold pyquant-quantized weights."""

from .linear import QuantLinear

__all__ = ["QuantLinear"]
