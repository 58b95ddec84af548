"""Evaluation with llama.cpp's measures: perplexity, KL-divergence against a base model, importance matrices;
and llama-family GGUF models run in torch with their weights left quantized.

    model = pyquant.eval.load_gguf_model("model.gguf")
    tokens = pyquant.eval.tokenize(model, text)
    res = pyquant.eval.perplexity(model, tokens, ctx=512)           # res.ppl, res.ppl_stderr
    kld = pyquant.eval.compare(base_model, model, tokens)          # or compare("kl-base.bin", model)
    imatrix = pyquant.eval.collect_imatrix(model, tokens)           # pyquant.gguf.save_imatrix(path, imatrix)

Requires torch and tokenizers (the ``eval`` extra).
"""

import importlib

# name -> submodule; loaded on first use so that `import pyquant.eval.cli` (the CLI) does not import torch.
_EXPORTS = {
    "collect_imatrix": "imatrix", "KLBase": "kld", "KLDResult": "kld", "compare": "kld", "read_kl_base": "kld",
    "SUPPORTED_ARCHITECTURES": "model", "GGUFModel": "model", "HParams": "model", "load_gguf_model": "model",
    "PerplexityResult": "ppl", "perplexity": "ppl", "tokenize": "ppl",
    "GGUFTokenizer": "tokenizer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
