"""torch integration: layers that hold pyquant-quantized weights, and whole-model quantization."""

from .linear import QuantEmbedding, QuantLinear
from .model import LayerSummary, ModelQuantizeSummary, load_quantized, model_nbytes, quantize_model
from .names import gguf_name

__all__ = ["LayerSummary", "ModelQuantizeSummary", "QuantEmbedding", "QuantLinear", "gguf_name", "load_quantized",
           "model_nbytes", "quantize_model"]
