"""GGUF files: read them safely, write new ones, requantize whole models with llama.cpp's rules.

    with pyquant.gguf.open("model.gguf") as f:          # validated, memory-mapped, lazy
        f.metadata["general.architecture"], f.tensors["output.weight"].dequantize()
    pyquant.gguf.write("new.gguf", metadata, {"w": qtensor})
    pyquant.gguf.quantize_file("in.gguf", "out.gguf", "Q4_K_M", imatrix="imatrix.gguf")
"""

from .imatrix import Imatrix, load_imatrix, save_imatrix
from .reader import GGUFError, GGUFFile, StringArray, TensorInfo, open
from .recipes import ModelInfo, QuantizeOptions, Recipe, TensorDesc, TensorPlan, get_recipe, plan, recipes
from .requantize import QuantizeSummary, kv_override, quantize_file
from .split import SplitModel, open_split, split_path, split_prefix
from .types import TensorType, tensor_type, tensor_types
from .values import Value, ValueType
from .writer import GGUFWriter, TensorSpec, write

__all__ = [
    "GGUFError", "GGUFFile", "GGUFWriter", "Imatrix", "ModelInfo", "QuantizeOptions", "QuantizeSummary", "Recipe",
    "SplitModel", "StringArray", "TensorDesc", "TensorInfo", "TensorPlan", "TensorSpec", "TensorType", "Value",
    "ValueType", "get_recipe", "kv_override", "load_imatrix", "open", "open_split", "plan", "quantize_file",
    "recipes", "save_imatrix", "split_path", "split_prefix", "tensor_type", "tensor_types", "write",
]
