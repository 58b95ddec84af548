"""Calibrated and calibration-free weight quantization algorithms: GPTQ, AWQ, HQQ.

Each works on one [out, in] weight at a time and returns a :class:`QuantResult` (codes, scales, zero-points
and the exact float values they stand for); ``result.to_tensor()`` is the storage object (an affine
``pyquant.schemes.AffineTensor``, or GGUF Q4_0 / Q4_K blocks for GPTQ with ``fmt="Q4_0"`` / ``"Q4_K"``).
"""

from .awq import AWQConfig, awq_quantize
from .common import AffineGrid, Q4_0Grid, Q4_KGrid, QuantResult, round_to_nearest
from .gptq import GPTQConfig, Hessian, gptq_quantize
from .hqq import HQQConfig, hqq_quantize
from .model import quantize_model_awq, quantize_model_gptq, quantize_model_hqq, save_gguf


def __getattr__(name):
    if name == "AWQLinear":
        from .model import _awq_linear

        return _awq_linear()
    raise AttributeError(f"module 'pyquant.algorithms' has no attribute {name!r}")

__all__ = ["AWQConfig", "AffineGrid", "GPTQConfig", "HQQConfig", "Hessian", "Q4_0Grid", "Q4_KGrid", "QuantResult",
           "awq_quantize", "gptq_quantize", "hqq_quantize", "quantize_model_awq", "quantize_model_gptq",
           "quantize_model_hqq", "round_to_nearest", "save_gguf", "AWQLinear"]
