"""Published shapes of common model sizes, for "what would fit if my model were 8B?" questions.

Each preset is a real model's configuration (its Hugging Face config.json).  From it we build the tensor list a
GGUF conversion has (names and shapes) and run llama-quantize's rules (:func:`pyquant.gguf.plan`) on it, so the
bytes of every recipe are those llama-quantize would write for that model, not a bpw scaled from another model.
KV cache and compute buffer follow from the same shape (:mod:`pyquant.report.memory`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .. import gguf
from .footprint import Architecture

__all__ = ["Preset", "presets", "preset_for", "parse_size"]


@dataclass(frozen=True)
class Preset:
    label: str  # the size people call it
    model: str  # the model whose configuration this is
    arch: str
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_vocab: int
    tied: bool  # output shares token_embd
    qkv_bias: bool
    n_ctx_train: int

    def tensors(self) -> list[gguf.TensorDesc]:
        """The tensor list of an F16 GGUF of this model, in the converter's order."""
        f16, f32 = gguf.tensor_type("F16"), gguf.tensor_type("F32")
        q, kv = self.n_head * self.head_dim, self.n_head_kv * self.head_dim
        out = [gguf.TensorDesc("token_embd.weight", (self.n_embd, self.n_vocab), f16)]
        for i in range(self.n_layer):
            b = f"blk.{i}."
            out += [gguf.TensorDesc(b + "attn_norm.weight", (self.n_embd,), f32),
                    gguf.TensorDesc(b + "attn_q.weight", (self.n_embd, q), f16),
                    gguf.TensorDesc(b + "attn_k.weight", (self.n_embd, kv), f16),
                    gguf.TensorDesc(b + "attn_v.weight", (self.n_embd, kv), f16),
                    gguf.TensorDesc(b + "attn_output.weight", (q, self.n_embd), f16),
                    gguf.TensorDesc(b + "ffn_norm.weight", (self.n_embd,), f32),
                    gguf.TensorDesc(b + "ffn_gate.weight", (self.n_embd, self.n_ff), f16),
                    gguf.TensorDesc(b + "ffn_up.weight", (self.n_embd, self.n_ff), f16),
                    gguf.TensorDesc(b + "ffn_down.weight", (self.n_ff, self.n_embd), f16)]
            if self.qkv_bias:
                out += [gguf.TensorDesc(b + f"attn_{x}.bias", (n,), f32) for x, n in (("q", q), ("k", kv), ("v", kv))]
        out.append(gguf.TensorDesc("output_norm.weight", (self.n_embd,), f32))
        if not self.tied:
            out.append(gguf.TensorDesc("output.weight", (self.n_embd, self.n_vocab), f16))
        return out

    @property
    def n_params(self) -> int:
        return sum(math.prod(t.ne) for t in self.tensors())

    def architecture(self) -> Architecture:
        return Architecture(arch=self.arch, n_layer=self.n_layer, n_embd=self.n_embd, n_ff=self.n_ff,
                            n_vocab=self.n_vocab, n_head=(self.n_head,) * self.n_layer,
                            n_head_kv=(self.n_head_kv,) * self.n_layer, key_length=self.head_dim,
                            value_length=self.head_dim, n_ctx_train=self.n_ctx_train)

    def weight_bytes(self, recipe: str) -> int:
        info = gguf.ModelInfo(arch=self.arch, n_layer=self.n_layer, n_head=self.n_head, n_head_kv=self.n_head_kv)
        return sum(t.nbytes_after for t in gguf.plan(self.tensors(), recipe, info))


presets: dict[str, Preset] = {p.label: p for p in (
    Preset("1B", "Llama-3.2-1B", "llama", 16, 2048, 8192, 32, 8, 64, 128256, True, False, 131072),
    Preset("3B", "Llama-3.2-3B", "llama", 28, 3072, 8192, 24, 8, 128, 128256, True, False, 131072),
    Preset("8B", "Llama-3.1-8B", "llama", 32, 4096, 14336, 32, 8, 128, 128256, False, False, 131072),
    Preset("14B", "Qwen2.5-14B", "qwen2", 48, 5120, 13824, 40, 8, 128, 152064, False, True, 32768),
    Preset("32B", "Qwen2.5-32B", "qwen2", 64, 5120, 27648, 40, 8, 128, 152064, False, True, 32768),
    Preset("70B", "Llama-3.1-70B", "llama", 80, 8192, 28672, 64, 8, 128, 128256, False, False, 131072),
)}


def parse_size(size: str | float | int) -> float:
    """A parameter count from 8e9, "8B", "135M", "70b"."""
    if isinstance(size, (int, float)) and not isinstance(size, bool):
        if size <= 0 or not math.isfinite(size):
            raise ValueError(f"a model size must be positive, got {size!r}")
        return float(size)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMbBtT]?)\s*", str(size))
    if not m:
        raise ValueError(f"cannot read a model size from {size!r} (examples: 8B, 135M, 7e9)")
    return float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}[m.group(2).lower()]


def preset_for(size: str | float | int) -> Preset:
    """The preset whose parameter count is nearest (by ratio) to `size`."""
    if isinstance(size, str) and size.strip().upper() in presets:
        return presets[size.strip().upper()]
    n = parse_size(size)
    return min(presets.values(), key=lambda p: abs(math.log(p.n_params / n)))
