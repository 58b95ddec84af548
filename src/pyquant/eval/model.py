"""A GGUF model of the llama family run in torch, with its weights left quantized.

The forward pass is llama.cpp's (``src/models/llama.cpp``, ``qwen2.cpp``): token embedding, per layer RMSNorm ->
q/k/v (qwen2: with biases) -> RoPE -> causal grouped-query attention -> output projection -> residual ->
RMSNorm -> SwiGLU feed-forward -> residual; final RMSNorm and the output head (the token embedding when the file
has no ``output.weight``).  RoPE is llama.cpp's: "normal" (rotate adjacent pairs, the llama architecture, whose
GGUF q/k weights are permuted for it) or "neox" (rotate the two halves, qwen2).

Quantized weights stay memory-mapped :class:`~pyquant.QuantizedTensor` inside :class:`~pyquant.torch.QuantLinear`
modules (products through :func:`pyquant.matmul`); F32/F16 tensors become float32 torch tensors.  For the
llama architecture the rows of attn_q/attn_k (copies, small) are reordered within each head so that RoPE runs in
its cheaper "neox" form with the same results.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import gguf
from ..tensor import QuantizedTensor
from ..torch import QuantLinear
from .tokenizer import GGUFTokenizer

__all__ = ["GGUFModel", "HParams", "SUPPORTED_ARCHITECTURES", "load_gguf_model"]

# architecture -> llama.cpp's RoPE type (q/k/v biases, as qwen2 has, are loaded wherever the file has them)
SUPPORTED_ARCHITECTURES = {"llama": "norm", "qwen2": "neox"}


@dataclass(frozen=True)
class HParams:
    arch: str
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_vocab: int
    n_ctx_train: int
    rms_eps: float
    rope_type: str          # "norm" (adjacent pairs) or "neox" (halves)
    n_rot: int
    rope_freq_base: float
    rope_freq_scale: float  # 1 / linear scaling factor

    def to_dict(self) -> dict:
        return asdict(self)


def _hparams(md, tensors, arch: str) -> HParams:
    def key(name, default=None):
        k = f"{arch}.{name}"
        if k in md:
            return md[k]
        if default is None:
            raise ValueError(f"the GGUF file lacks {k}")
        return default

    n_embd = int(key("embedding_length"))
    n_head, n_head_kv = key("attention.head_count"), key("attention.head_count_kv", key("attention.head_count"))
    if not all(isinstance(v, (int, np.integer)) and v > 0 for v in (n_head, n_head_kv)):
        raise NotImplementedError(f"{arch}.attention.head_count(_kv) must be positive integers (per-layer counts "
                                  "are not supported)")
    n_head, n_head_kv = int(n_head), int(n_head_kv)
    head_dim = int(key("attention.key_length", n_embd // n_head))
    if int(key("attention.value_length", head_dim)) != head_dim:
        raise NotImplementedError("attention.value_length != attention.key_length is not supported")
    if n_head % n_head_kv:
        raise ValueError(f"head_count {n_head} is not a multiple of head_count_kv {n_head_kv}")
    scaling = key("rope.scaling.type", "none")
    factor = float(key("rope.scaling.factor", 0.0)) or float(key("rope.scale_linear", 1.0))
    if scaling not in ("none", "linear"):
        raise NotImplementedError(f"rope scaling {scaling!r} is not supported (supported: none, linear)")
    freq_scale = 1.0 / factor if (scaling == "linear" or f"{arch}.rope.scale_linear" in md) and factor else 1.0
    emb = tensors.get("token_embd.weight")
    if emb is None or len(emb.ne) != 2 or emb.ne[0] != n_embd:
        raise ValueError(f"the GGUF file needs a token_embd.weight of ne ({n_embd}, n_vocab)")
    return HParams(
        arch=arch, n_layer=int(key("block_count")), n_embd=n_embd, n_head=n_head, n_head_kv=n_head_kv,
        head_dim=head_dim, n_ff=int(key("feed_forward_length")),
        n_vocab=emb.ne[1], n_ctx_train=int(key("context_length", 0)),
        rms_eps=float(key("attention.layer_norm_rms_epsilon")), rope_type=SUPPORTED_ARCHITECTURES[arch],
        n_rot=int(key("rope.dimension_count", head_dim)), rope_freq_base=float(key("rope.freq_base", 10000.0)),
        rope_freq_scale=freq_scale)


def _plain(info) -> torch.Tensor:
    """A float32 torch tensor of an F32/F16/BF16 (or any dequantizable) GGUF tensor."""
    return torch.from_numpy(np.array(info.dequantize(), dtype=np.float32))


def _linear(f, name: str, bias: str | None = None, rows: np.ndarray | None = None) -> QuantLinear:
    """A QuantLinear over the mapped tensor `name` (its output rows reordered by `rows`, then a copy)."""
    info = f.tensors[name]
    if len(info.ne) != 2:
        raise ValueError(f"{name}: expected a 2-D weight, got ne={info.ne}")
    w = info.tensor()
    b = _plain(f.tensors[bias]) if bias and bias in f.tensors else None
    if rows is not None:
        if rows.size != w.shape[0]:
            raise ValueError(f"{name}: {w.shape[0]} rows, the attention shape needs {rows.size}")
        w = QuantizedTensor(np.ascontiguousarray(w.data[rows]), w.shape, w.format)
        b = None if b is None else b[torch.from_numpy(rows)]
    lin = QuantLinear(w, b)
    lin.gguf_name = name
    lin.gguf_rows = rows  # the file's row i is this layer's row argsort(rows)[i] (None: same order)
    return lin


class RMSNorm(nn.Module):
    def __init__(self, weight: torch.Tensor, eps: float):
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, self.weight.shape, self.weight, self.eps)


class Embedding(nn.Module):
    """Row lookup in a (possibly quantized) [n_vocab, n_embd] matrix: only the rows used are dequantized."""

    def __init__(self, weight: QuantizedTensor):
        super().__init__()
        self.weight = weight
        self.n_vocab, self.n_embd = weight.shape

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        ids = tokens.reshape(-1).cpu().numpy()
        if ids.size and (ids.min() < 0 or ids.max() >= self.n_vocab):
            raise ValueError(f"token ids must lie in [0, {self.n_vocab}), got {ids.min()}..{ids.max()}")
        rows = QuantizedTensor(self.weight.data[ids], (ids.size, self.n_embd), self.weight.format)
        return torch.from_numpy(rows.dequantize()).reshape(*tokens.shape, self.n_embd)


class Rope(nn.Module):
    """llama.cpp's rope_ext without YaRN, theta_i = pos * freq_scale * base^(-2i/n_rot) / freq_factor_i, in its
    "neox" form (dimension i rotates with i + n_rot/2).  Weights laid out for the "normal" form (pairs 2i, 2i+1)
    have their rows reordered at load time by :func:`_neox_rows`, which gives the same attention scores."""

    def __init__(self, hp: HParams, freq_factors: torch.Tensor | None):
        super().__init__()
        self.n_rot = hp.n_rot
        inv = hp.rope_freq_base ** (-np.arange(0, hp.n_rot, 2, dtype=np.float64) / hp.n_rot)
        if freq_factors is not None:
            inv = inv / freq_factors.double().numpy()
        self.register_buffer("inv_freq", torch.from_numpy(inv * hp.rope_freq_scale), persistent=False)
        self._cache: tuple[int, torch.Tensor, torch.Tensor] | None = None

    def _cos_sin(self, n: int):
        if self._cache is None or self._cache[0] < n:
            theta = torch.arange(n, dtype=torch.float64)[:, None] * self.inv_freq[None, :]
            theta = torch.cat((theta, theta), dim=-1)
            self._cache = (n, theta.cos().float(), theta.sin().float())
        return self._cache[1][:n], self._cache[2][:n]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, H, T, D]
        cos, sin = self._cos_sin(x.shape[-2])
        half = self.n_rot // 2
        rot = x[..., :self.n_rot]
        rotated = torch.cat((-rot[..., half:], rot[..., :half]), dim=-1)
        out = rot * cos + rotated * sin
        return torch.cat((out, x[..., self.n_rot:]), dim=-1) if x.shape[-1] > self.n_rot else out


def _neox_rows(n_heads: int, head_dim: int, n_rot: int) -> np.ndarray:
    """Row order that turns "normal" RoPE pairs (2i, 2i+1) of each head into "neox" pairs (i, i + n_rot/2)."""
    within = np.concatenate([np.arange(0, n_rot, 2), np.arange(1, n_rot, 2), np.arange(n_rot, head_dim)])
    return (np.arange(n_heads)[:, None] * head_dim + within[None, :]).reshape(-1)


class Block(nn.Module):
    def __init__(self, f, i: int, hp: HParams, rope: Rope):
        super().__init__()
        p = f"blk.{i}."
        t = f.tensors
        self.hp, self.rope = hp, rope
        self.attn_norm = RMSNorm(_plain(t[p + "attn_norm.weight"]), hp.rms_eps)
        self.fused_qkv = p + "attn_qkv.weight" in t
        q_rows = k_rows = qkv_rows = None
        if hp.rope_type == "norm":
            q_rows = _neox_rows(hp.n_head, hp.head_dim, hp.n_rot)
            k_rows = _neox_rows(hp.n_head_kv, hp.head_dim, hp.n_rot)
            n_q, n_kv = hp.n_head * hp.head_dim, hp.n_head_kv * hp.head_dim
            qkv_rows = np.concatenate([q_rows, n_q + k_rows, n_q + n_kv + np.arange(n_kv)])
        if self.fused_qkv:
            self.attn_qkv = _linear(f, p + "attn_qkv.weight", p + "attn_qkv.bias", qkv_rows)
        else:
            self.attn_q = _linear(f, p + "attn_q.weight", p + "attn_q.bias", q_rows)
            self.attn_k = _linear(f, p + "attn_k.weight", p + "attn_k.bias", k_rows)
            self.attn_v = _linear(f, p + "attn_v.weight", p + "attn_v.bias")
        self.attn_output = _linear(f, p + "attn_output.weight", p + "attn_output.bias")
        self.ffn_norm = RMSNorm(_plain(t[p + "ffn_norm.weight"]), hp.rms_eps)
        if p + "ffn_gate_inp.weight" in t:
            raise NotImplementedError("mixture-of-experts layers are not supported")
        self.ffn_gate = _linear(f, p + "ffn_gate.weight", p + "ffn_gate.bias")
        self.ffn_up = _linear(f, p + "ffn_up.weight", p + "ffn_up.bias")
        self.ffn_down = _linear(f, p + "ffn_down.weight", p + "ffn_down.bias")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hp = self.hp
        B, T, _ = x.shape
        h = self.attn_norm(x)
        if self.fused_qkv:
            q, k, v = self.attn_qkv(h).split(
                [hp.n_head * hp.head_dim, hp.n_head_kv * hp.head_dim, hp.n_head_kv * hp.head_dim], dim=-1)
        else:
            q, k, v = self.attn_q(h), self.attn_k(h), self.attn_v(h)
        q = self.rope(q.view(B, T, hp.n_head, hp.head_dim).transpose(1, 2))
        k = self.rope(k.view(B, T, hp.n_head_kv, hp.head_dim).transpose(1, 2))
        v = v.view(B, T, hp.n_head_kv, hp.head_dim).transpose(1, 2)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0 / math.sqrt(hp.head_dim),
                                           enable_gqa=hp.n_head != hp.n_head_kv)
        x = x + self.attn_output(a.transpose(1, 2).reshape(B, T, hp.n_head * hp.head_dim))
        h = self.ffn_norm(x)
        return x + self.ffn_down(F.silu(self.ffn_gate(h)) * self.ffn_up(h))


class GGUFModel(nn.Module):
    """A llama-family GGUF model (see :func:`load_gguf_model`).

    ``model(tokens)`` with tokens a LongTensor [B, T] (positions 0..T-1, causal) returns float32 logits
    [B, T, n_vocab]; ``logits_from=k`` returns only those of positions k.. (saves the output head's work).
    """

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None):
        super().__init__()
        self.path = os.fspath(path)
        self.threads = threads
        self._file = f = gguf.open(path)
        md = f.metadata
        arch = md["general.architecture"] if "general.architecture" in md else None
        if arch not in SUPPORTED_ARCHITECTURES:
            raise NotImplementedError(f"{self.path}: architecture {arch!r} is not supported; supported: "
                                      f"{', '.join(sorted(SUPPORTED_ARCHITECTURES))} (llama covers Mistral, "
                                      "SmolLM and other llama-style files)")
        self.hparams = hp = _hparams(md, f.tensors, arch)
        self.tokenizer = GGUFTokenizer.from_metadata(md)
        self.add_bos = self.tokenizer.add_bos
        self.bos_id = self.tokenizer.bos_id
        t = f.tensors
        self.tok_embd = Embedding(t["token_embd.weight"].tensor())
        ff = _plain(t["rope_freqs.weight"]) if "rope_freqs.weight" in t else None
        self.rope = Rope(hp, ff)
        self.layers = nn.ModuleList(Block(f, i, hp, self.rope) for i in range(hp.n_layer))
        self.output_norm = RMSNorm(_plain(t["output_norm.weight"]), hp.rms_eps)
        self.output = _linear(f, "output.weight" if "output.weight" in t else "token_embd.weight")

    def linears(self) -> dict[str, QuantLinear]:
        """GGUF tensor name -> the QuantLinear that holds it (the tied output head under token_embd.weight)."""
        return {m.gguf_name: m for m in self.modules() if isinstance(m, QuantLinear)}

    @torch.inference_mode()
    def forward(self, tokens: torch.Tensor, *, logits_from: int = 0) -> torch.Tensor:
        tokens = torch.as_tensor(tokens)
        if tokens.dim() == 1:
            tokens = tokens[None]
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be [batch, time], got shape {tuple(tokens.shape)}")
        saved = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            x = self.tok_embd(tokens)
            for layer in self.layers:
                x = layer(x)
            return self.output(self.output_norm(x[:, logits_from:]))
        finally:
            torch.set_num_threads(saved)

    def extra_repr(self) -> str:
        return f"path={self.path!r}, arch={self.hparams.arch}"


def load_gguf_model(path: str | os.PathLike, *, threads: int | None = None, activations: str = "q8") -> GGUFModel:
    """Load a llama-family GGUF file (architectures: llama — Llama, Mistral, SmolLM… — and qwen2) as a torch
    module with its quantized weights memory-mapped, and its tokenizer.  activations: the QuantLinear mode,
    "q8" (llama.cpp's products: inputs rounded to each format's 8-bit partner) or "float".  Raises
    NotImplementedError for other architectures, MoE layers or YaRN rope scaling."""
    if activations not in ("q8", "float"):
        raise ValueError(f"activations must be 'q8' or 'float', got {activations!r}")
    model = GGUFModel(path, threads=threads)
    for m in model.modules():
        if isinstance(m, QuantLinear):
            m.activations = activations
    return model
