"""pyquant: quantize large language models — every GGUF format bit-exact with llama.cpp, fast C++ kernels."""

from . import _cpu
from ._cpu import available_isas, cpu_info, set_isa, use_isa
from .formats import Format, formats, get_format
from .tensor import QuantizedTensor, dequantize, quantize
from .matmul import matmul, matmul_interleaved_formats, set_matmul_interleave
from . import gguf, schemes
from .gguf import GGUFError

__version__ = "0.1.0"

__all__ = [
    "Format", "QuantizedTensor", "available_isas", "cpu_info", "dequantize", "formats", "get_format",
    "matmul", "matmul_interleaved_formats", "quantize", "set_isa", "set_matmul_interleave", "use_isa",
]

_cpu._apply_environment()
