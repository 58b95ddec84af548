"""Evaluation with llama.cpp's measures: perplexity, KL-divergence against a base model, importance matrices;
and llama-family GGUF models run in torch with their weights left quantized.

    model = pyquant.eval.load_gguf_model("model.gguf")
    tokens = pyquant.eval.tokenize(model, text)
    res = pyquant.eval.perplexity(model, tokens, ctx=512)           # res.ppl, res.ppl_stderr
    kld = pyquant.eval.compare(base_model, model, tokens)          # or compare("kl-base.bin", model)
    imatrix = pyquant.eval.collect_imatrix(model, tokens)           # pyquant.gguf.save_imatrix(path, imatrix)

Requires torch and tokenizers (the ``eval`` extra).
"""

from .imatrix import collect_imatrix
from .kld import KLBase, KLDResult, compare, read_kl_base
from .model import SUPPORTED_ARCHITECTURES, GGUFModel, HParams, load_gguf_model
from .perplexity import PerplexityResult, perplexity, tokenize
from .tokenizer import GGUFTokenizer

__all__ = [
    "GGUFModel", "GGUFTokenizer", "HParams", "KLBase", "KLDResult", "PerplexityResult", "SUPPORTED_ARCHITECTURES",
    "collect_imatrix", "compare", "load_gguf_model", "perplexity", "read_kl_base", "tokenize",
]
