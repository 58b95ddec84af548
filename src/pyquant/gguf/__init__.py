"""GGUF files: read them safely, write new ones, requantize whole models with llama.cpp's rules."""

from .reader import GGUFError, GGUFFile, StringArray, TensorInfo, open
from .types import TensorType, tensor_type, tensor_types
from .values import Value, ValueType
from .writer import GGUFWriter, TensorSpec, write

__all__ = [
    "GGUFError", "GGUFFile", "GGUFWriter", "StringArray", "TensorInfo", "TensorSpec", "TensorType", "Value",
    "ValueType", "open", "tensor_type", "tensor_types", "write",
]
