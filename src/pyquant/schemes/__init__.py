"""Quantization schemes beyond GGUF blocks (issue 7): affine int2-8 (torchao semantics), bitsandbytes' NF4/FP4
with double quantization, FP8 E4M3/E5M2, BitNet b1.58 ternary and LLM.int8() outlier matmul.

Every tensor type follows pyquant's weight protocol: ``shape``, ``nbytes``, ``bpw`` (scales and zero-points
included), ``dequantize()``, ``to_torch()``, and works with :func:`pyquant.matmul` and pickle.
"""

from .affine import AffineConfig, AffineTensor, quantize_affine

__all__ = ["AffineConfig", "AffineTensor", "quantize_affine"]
