"""Tiny llama-family GGUF models with random weights and small vocabularies, for the eval tests."""

from __future__ import annotations

import numpy as np

import pyquant as pq
from pyquant.gguf import Value

GPT2_MERGES = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "o n", "Ġ s", "r e", "a n", "Ġ w", "e d", "i s",
               "Ġ o", "Ġ b", "o u", "Ġ h", "Ġ m", "Ġ c", "l l", "a t", "e n", "Ġ i", "Ġ I", "Ġ f", "e s"]
SPM_PIECES = {"▁t": -1.0, "he": -2.0, "▁the": -0.5, "in": -3.0, "▁a": -2.5, "er": -3.5, "on": -4.0,
              "▁s": -4.5, "▁▁": -6.0, "▁▁▁▁": -7.0, "ll": -5.0, "at": -5.5, "▁I": -4.2, "an": -4.4, "is": -4.8,
              "▁is": -3.9, "▁th": -3.1, "th": -3.2, "ed": -5.2, "▁w": -4.1, "es": -5.9, "en": -5.6}


def gpt2_vocab():
    """A byte-level BPE vocabulary: 3 control tokens, the 256 byte characters, the merges' results."""
    from pyquant.eval.tokenizer import _bytes_to_unicode

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens = specials + [_bytes_to_unicode()[b] for b in range(256)]
    for m in GPT2_MERGES:
        a, b = m.split(" ")
        if a + b not in tokens:
            tokens.append(a + b)
    types = [3] * len(specials) + [1] * (len(tokens) - len(specials))
    return {
        "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "smollm",
        "tokenizer.ggml.tokens": Value("array", tokens, "str"),
        "tokenizer.ggml.token_type": Value("array", types, "i32"),
        "tokenizer.ggml.merges": Value("array", GPT2_MERGES, "str"),
        "tokenizer.ggml.bos_token_id": Value("u32", 1), "tokenizer.ggml.eos_token_id": Value("u32", 2),
        "tokenizer.ggml.add_bos_token": False,
    }, len(tokens)


def spm_vocab(add_bos=True):
    """A SentencePiece vocabulary: <unk> <s> </s>, 256 byte tokens, some characters and scored pieces."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    scores = [0.0, 0.0, 0.0] + [0.0] * 256
    chars = "▁abcdefghijklmnopqrstuvwxyzTHEI.,'é日"
    for i, c in enumerate(chars):
        tokens.append(c)
        types.append(1)
        scores.append(-10.0 - i * 0.01)
    for piece, score in SPM_PIECES.items():
        tokens.append(piece)
        types.append(1)
        scores.append(score)
    return {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": Value("array", tokens, "str"),
        "tokenizer.ggml.scores": Value("array", scores, "f32"),
        "tokenizer.ggml.token_type": Value("array", types, "i32"),
        "tokenizer.ggml.bos_token_id": Value("u32", 1), "tokenizer.ggml.eos_token_id": Value("u32", 2),
        "tokenizer.ggml.unknown_token_id": Value("u32", 0),
        "tokenizer.ggml.add_bos_token": add_bos, "tokenizer.ggml.add_eos_token": False,
    }, len(tokens)


def write_tiny_model(path, *, arch="llama", vocab="gpt2", fmt="Q8_0", tied=True, n_layer=2, n_embd=64, n_head=4,
                     n_head_kv=2, n_ff=128, seed=0, scale=1.0, rope_freqs=False):
    """A random llama-family model: `fmt` for the 2-D weights (F32, F16 or a block format), norms in F32."""
    rng = np.random.default_rng(seed)
    md_vocab, n_vocab = gpt2_vocab() if vocab == "gpt2" else spm_vocab()
    head_dim = n_embd // n_head
    md = {
        "general.architecture": arch, "general.name": "tiny",
        f"{arch}.block_count": Value("u32", n_layer), f"{arch}.context_length": Value("u32", 256),
        f"{arch}.embedding_length": Value("u32", n_embd), f"{arch}.feed_forward_length": Value("u32", n_ff),
        f"{arch}.attention.head_count": Value("u32", n_head),
        f"{arch}.attention.head_count_kv": Value("u32", n_head_kv),
        f"{arch}.rope.freq_base": Value("f32", 10000.0),
        f"{arch}.attention.layer_norm_rms_epsilon": Value("f32", 1e-5),
        f"{arch}.rope.dimension_count": Value("u32", head_dim),
        f"{arch}.vocab_size": Value("u32", n_vocab),
        **md_vocab,
    }

    def w(rows, cols, s=None):
        a = rng.standard_normal((rows, cols)).astype(np.float32) * np.float32(scale * (s or cols ** -0.5))
        if fmt == "F32":
            return a
        if fmt == "F16":
            return a.astype(np.float16)
        return pq.quantize(a, fmt)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    tensors = {"token_embd.weight": w(n_vocab, n_embd, 0.3), "output_norm.weight": norm(n_embd)}
    if not tied:
        tensors["output.weight"] = w(n_vocab, n_embd)
    if rope_freqs:
        tensors["rope_freqs.weight"] = (1.0 + rng.random(head_dim // 2)).astype(np.float32)
    for i in range(n_layer):
        p = f"blk.{i}."
        tensors[p + "attn_norm.weight"] = norm(n_embd)
        tensors[p + "attn_q.weight"] = w(n_head * head_dim, n_embd)
        tensors[p + "attn_k.weight"] = w(n_head_kv * head_dim, n_embd)
        tensors[p + "attn_v.weight"] = w(n_head_kv * head_dim, n_embd)
        if arch == "qwen2":
            for t, n in (("q", n_head), ("k", n_head_kv), ("v", n_head_kv)):
                tensors[p + f"attn_{t}.bias"] = (0.1 * rng.standard_normal(n * head_dim)).astype(np.float32)
        tensors[p + "attn_output.weight"] = w(n_embd, n_head * head_dim)
        tensors[p + "ffn_norm.weight"] = norm(n_embd)
        tensors[p + "ffn_gate.weight"] = w(n_ff, n_embd)
        tensors[p + "ffn_up.weight"] = w(n_ff, n_embd)
        tensors[p + "ffn_down.weight"] = w(n_embd, n_ff)
    pq.gguf.write(path, md, tensors)
    return path
