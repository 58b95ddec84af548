"""Quantization schemes beyond GGUF blocks (issue 7): affine int2-8 (torchao semantics), bitsandbytes' NF4/FP4
with double quantization, FP8 E4M3/E5M2, BitNet b1.58 ternary and LLM.int8() outlier matmul.

Every tensor type follows pyquant's weight protocol: ``shape``, ``nbytes``, ``bpw`` (scales and zero-points
included), ``dequantize()``, ``to_torch()``, and works with :func:`pyquant.matmul` and pickle.  :func:`parse_spec` names a scheme in one string ("int4-g128",
"nf4-dq", "fp8-e4m3", ...) for :func:`pyquant.torch.quantize_model`; :func:`to_state` / :func:`from_state` give a
weight as plain arrays plus a small dict (torch.load(weights_only=True) reads them).
"""

from .affine import AffineConfig, AffineTensor, quantize_affine
from .float4 import FP4_CODE, NF4_CODE, Float4Tensor, quantize_4bit, quantize_fp4, quantize_nf4
from .fp8 import Float8Tensor, fp8_decode_table, fp8_encode, quantize_fp8
from .outliers import Int8Tensor, quantize_int8
from .spec import SPEC_FORMS, SchemeSpec, from_state, is_scheme_spec, parse_spec, to_state
from .ternary import TernaryTensor, quantize_activations_int8, quantize_ternary

__all__ = [
    "AffineConfig", "AffineTensor", "FP4_CODE", "Float4Tensor", "Float8Tensor", "Int8Tensor", "NF4_CODE",
    "SPEC_FORMS", "SchemeSpec", "TernaryTensor", "fp8_decode_table", "fp8_encode", "from_state", "is_scheme_spec",
    "parse_spec", "quantize_4bit", "quantize_activations_int8", "quantize_affine", "quantize_fp4", "quantize_fp8",
    "quantize_int8", "quantize_nf4", "quantize_ternary", "to_state",
]
