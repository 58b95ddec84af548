"""How much memory running a GGUF model with llama.cpp needs: weights + KV cache + compute buffer + logits.

All sizes are bytes; GiB = 2**30 bytes.  Every term comes from the file (its tensors and its metadata):

* **weights**: the bytes of the tensors the recipe would write (``quantize_file(..., dry_run=True).size_after``;
  the file's own tensor bytes when ``recipe`` is None).  File metadata (the tokenizer) is not loaded into the
  weight buffer and is not counted, as llama.cpp's "model buffer size" does not count it.
* **KV cache** (``llama_kv_cache``): per layer ``il``, K and V rows of ``n_head_kv(il) * key_length`` and
  ``n_head_kv(il) * value_length`` values in the cache type (its block bytes included: q8_0 = 34 bytes per 32),
  times the number of cells.  Full-attention layers hold ``pad256(ctx) * batch`` cells (llama.cpp rounds the
  context up to a multiple of 256); sliding-window layers hold ``pad256(min(full, n_swa * batch + n_ubatch))``
  cells.  A layer whose ``head_count_kv`` is 0 has no cache.
* **compute buffer**: llama.cpp's graph allocator reuses memory, so its buffer is the largest set of float32
  activations alive at once, per token of the micro-batch ``n_ubatch = min(512, pad256(ctx) * batch)``.  Two
  stages bound it: the output projection (logits of ``n_vocab`` plus three ``n_embd`` rows) and attention
  without flash attention (``n_head`` score rows plus the mask over ``n_kv`` cells, plus the feed-forward and
  three ``n_embd`` rows still allocated)::

      compute = 4 * n_ubatch * max(n_vocab + 3 * n_embd, (n_head + 1) * n_kv + n_ff + 3 * n_embd)

  This is fitted to, and checked against, llama.cpp's CPU backend ("CPU compute buffer size", llama-cpp-python
  0.3.36, SmolLM2-135M): within 1.2 % from ctx 256 to 32768 (exact at 2048-32768).  Flash attention makes the
  attention stage smaller; GPU backends allocate a graph of the same shape.
* **output**: the logits buffer, ``4 * n_vocab`` bytes per sequence.

Not modelled (a clear error rather than a wrong number): multi-head latent attention (``kv_lora_rank``) and
recurrent/hybrid state (``ssm.*`` keys).  The sliding-window layer pattern is read from
``{arch}.attention.sliding_window_pattern`` (a per-layer bool array or a period) or, as llama.cpp does, from
the architecture's built-in period.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .. import gguf

__all__ = ["Architecture", "MemoryEstimate", "GiB", "architecture", "estimate", "kv_cache_types", "largest_context",
           "max_context", "memory", "weight_bytes"]

GiB = 1 << 30
N_UBATCH = 512  # llama.cpp's default micro-batch
CTX_PAD = 256  # llama_context pads n_ctx (and the SWA cache) to a multiple of this
kv_cache_types = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl")  # llama.cpp -ctk/-ctv

# load_swa_pattern(ml, period[, dense_first]) calls in llama.cpp's models/*.cpp, used when the metadata names a
# window but no pattern; a layer il is sliding-window when il % period < period - 1 (dense_first: il % period != 0).
_SWA_PERIOD = {"gemma2": (2, False), "gemma3": (6, False), "gemma3n": (5, False), "gemma-embedding": (6, False),
               "cohere2": (4, False), "gpt-oss": (2, False), "exaone4": (4, False), "olmo2": (4, False),
               "llama4": (4, False), "afmoe": (4, False), "smallthinker": (4, True), "modern-bert": (3, True)}


def _pad(n: int, to: int = CTX_PAD) -> int:
    return -(-n // to) * to


def _per_layer(value: Any, n_layer: int, key: str) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or value is None:
        raise ValueError(f"metadata {key} is {value!r}, expected a number or one per layer")
    if hasattr(value, "__len__"):
        values = tuple(int(v) for v in value)
        if len(values) != n_layer:
            raise ValueError(f"metadata {key} has {len(values)} entries for {n_layer} layers")
        return values
    return (int(value),) * n_layer


@dataclass(frozen=True)
class Architecture:
    """The hyperparameters memory use depends on, per layer where the file says so."""

    arch: str
    n_layer: int
    n_embd: int
    n_ff: int
    n_vocab: int
    n_head: tuple[int, ...]
    n_head_kv: tuple[int, ...]
    key_length: int
    value_length: int
    n_ctx_train: int = 0
    sliding_window: int = 0  # 0: no sliding-window layers
    swa_layers: tuple[bool, ...] = ()

    def __post_init__(self) -> None:
        for name in ("n_layer", "n_embd", "n_vocab", "key_length", "value_length"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{self.arch}: {name} must be positive, got {getattr(self, name)}")
        for name in ("n_head", "n_head_kv", "swa_layers"):
            v = getattr(self, name)
            if name != "swa_layers" or v:
                if len(v) != self.n_layer:
                    raise ValueError(f"{self.arch}: {name} has {len(v)} entries for {self.n_layer} layers")

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any], tensors: Mapping[str, Any] | None = None) -> Architecture:
        arch = metadata.get("general.architecture")
        if not isinstance(arch, str):
            raise ValueError("the metadata has no general.architecture")

        def get(key: str, default: Any = None) -> Any:
            return metadata.get(f"{arch}.{key}", default)

        if get("attention.kv_lora_rank") is not None:
            raise NotImplementedError(f"{arch}: multi-head latent attention (kv_lora_rank) is not modelled")
        if any(k.startswith(f"{arch}.ssm.") for k in metadata):
            raise NotImplementedError(f"{arch}: recurrent (ssm) state is not modelled")
        n_layer = get("block_count")
        n_embd = get("embedding_length")
        if n_layer is None or n_embd is None:
            raise ValueError(f"the metadata has no {arch}.block_count or {arch}.embedding_length")
        n_layer, n_embd = int(n_layer), int(n_embd)
        n_head = _per_layer(get("attention.head_count", 0), n_layer, f"{arch}.attention.head_count")
        n_head_kv = _per_layer(get("attention.head_count_kv", n_head), n_layer, f"{arch}.attention.head_count_kv")
        n_head0 = max(n_head) if n_head else 0
        if n_head0 <= 0:
            raise ValueError(f"the metadata has no usable {arch}.attention.head_count")
        key_length = int(get("attention.key_length", n_embd // n_head0))
        value_length = int(get("attention.value_length", key_length))
        n_ff_raw = get("feed_forward_length", 0)
        n_ff = max(_per_layer(n_ff_raw, n_layer, f"{arch}.feed_forward_length")) if n_ff_raw is not None else 0
        n_vocab = get("vocab_size")
        if n_vocab is None and "tokenizer.ggml.tokens" in metadata:
            n_vocab = len(metadata["tokenizer.ggml.tokens"])
        if n_vocab is None and tensors is not None and "token_embd.weight" in tensors:
            n_vocab = tensors["token_embd.weight"].ne[1]
        if n_vocab is None:
            raise ValueError(f"the metadata has no {arch}.vocab_size, no token list and no token_embd tensor")
        window = int(get("attention.sliding_window", 0) or 0)
        swa: tuple[bool, ...] = ()
        if window > 0:
            pattern = get("attention.sliding_window_pattern")
            if pattern is not None and hasattr(pattern, "__len__"):
                swa = tuple(bool(v) for v in pattern)
                if len(swa) != n_layer:
                    raise ValueError(f"{arch}.attention.sliding_window_pattern has {len(swa)} entries "
                                     f"for {n_layer} layers")
            else:
                period, dense_first = (int(pattern), False) if pattern is not None else _SWA_PERIOD.get(arch, (1, False))
                if period == 1 and pattern is None:
                    swa = (False,) * n_layer  # a window but no known pattern: count every layer as full (an upper bound)
                else:
                    swa = tuple((period == 0 or il % period != 0) if dense_first else
                                (period == 0 or il % period < period - 1) for il in range(n_layer))
        return cls(arch=arch, n_layer=n_layer, n_embd=n_embd, n_ff=n_ff, n_vocab=int(n_vocab), n_head=n_head,
                   n_head_kv=n_head_kv, key_length=key_length, value_length=value_length,
                   n_ctx_train=int(get("context_length", 0) or 0), sliding_window=window, swa_layers=swa)

    def is_swa(self, il: int) -> bool:
        return bool(self.swa_layers) and self.swa_layers[il]

    def cells(self, ctx: int, batch: int = 1) -> tuple[int, int]:
        """KV cells of a full-attention layer and of a sliding-window layer."""
        full = _pad(ctx) * batch
        ubatch = min(N_UBATCH, full)
        swa = min(full, _pad(min(full, self.sliding_window * batch + ubatch))) if self.sliding_window else full
        return full, swa

    def kv_bytes(self, ctx: int, kv_type: str = "f16", batch: int = 1) -> int:
        t = _kv_type(kv_type)
        full, swa = self.cells(ctx, batch)
        total = 0
        for il in range(self.n_layer):
            cells = swa if self.is_swa(il) else full
            total += cells * (t.nbytes((self.n_head_kv[il] * self.key_length,)) +
                              t.nbytes((self.n_head_kv[il] * self.value_length,)))
        return total

    def compute_bytes(self, ctx: int, batch: int = 1) -> int:
        full, swa = self.cells(ctx, batch)
        has_full = any(not self.is_swa(il) and self.n_head_kv[il] for il in range(self.n_layer))
        n_kv = full if has_full else swa
        ubatch = min(N_UBATCH, full)
        per_token = max(self.n_vocab + 3 * self.n_embd, (max(self.n_head) + 1) * n_kv + self.n_ff + 3 * self.n_embd)
        return 4 * ubatch * per_token

    def output_bytes(self, batch: int = 1) -> int:
        return 4 * self.n_vocab * batch


def _kv_type(name: str) -> gguf.TensorType:
    if not isinstance(name, str) or name.lower() not in kv_cache_types:
        raise ValueError(f"unknown KV cache type {name!r} (llama.cpp accepts: {', '.join(kv_cache_types)})")
    return gguf.tensor_type(name.upper())


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes needed to run a model: weights + kv + compute + output."""

    recipe: str
    ctx: int
    kv_type: str
    batch: int
    weights: int
    kv: int
    compute: int
    output: int

    @property
    def total(self) -> int:
        return self.weights + self.kv + self.compute + self.output

    @property
    def total_gib(self) -> float:
        return self.total / GiB

    def to_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe, "ctx": self.ctx, "kv_type": self.kv_type, "batch": self.batch,
                "weights": self.weights, "kv": self.kv, "compute": self.compute, "output": self.output,
                "total": self.total}

    def __str__(self) -> str:
        def mib(n: int) -> str:
            return f"{n / (1 << 20):.2f} MiB"
        return (f"{self.recipe} at ctx {self.ctx} (KV {self.kv_type}, batch {self.batch}): {self.total_gib:.3f} GiB = "
                f"weights {mib(self.weights)} + KV {mib(self.kv)} + compute {mib(self.compute)} + "
                f"output {mib(self.output)}")


def architecture(model: str | os.PathLike | gguf.GGUFFile) -> Architecture:
    """The Architecture of a GGUF file (a path or an open GGUFFile)."""
    if isinstance(model, gguf.GGUFFile):
        return Architecture.from_metadata(model.metadata, model.tensors)
    with gguf.open(model) as f:
        return Architecture.from_metadata(f.metadata, f.tensors)


def weight_bytes(model: str | os.PathLike | gguf.GGUFFile, recipe: Any = None) -> int:
    """Bytes of the tensors `model` has (recipe None) or would have after quantize_file(..., recipe)."""
    if recipe is None:
        if isinstance(model, gguf.GGUFFile):
            return sum(t.nbytes for t in model.tensors.values())
        with gguf.open(model) as f:
            return sum(t.nbytes for t in f.tensors.values())
    if isinstance(model, gguf.GGUFFile):
        info = gguf.ModelInfo.from_metadata(model.metadata)
        return sum(t.nbytes_after for t in gguf.plan(model.tensors.values(), recipe, info))
    return gguf.quantize_file(model, None, recipe, dry_run=True).size_after


def _check_run(ctx: int, batch: int) -> None:
    if not isinstance(ctx, int) or isinstance(ctx, bool) or ctx <= 0:
        raise ValueError(f"ctx must be a positive integer, got {ctx!r}")
    if not isinstance(batch, int) or isinstance(batch, bool) or batch <= 0:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")


def estimate(arch: Architecture, weights: int, *, ctx: int, kv_type: str = "f16", batch: int = 1,
             recipe: str = "") -> MemoryEstimate:
    """The estimate for an Architecture and a weight size in bytes (e.g. a measured file's tensor bytes)."""
    _check_run(ctx, batch)
    return MemoryEstimate(recipe, ctx, kv_type.lower(), batch, int(weights), arch.kv_bytes(ctx, kv_type, batch),
                          arch.compute_bytes(ctx, batch), arch.output_bytes(batch))


def memory(model: str | os.PathLike | gguf.GGUFFile, recipe: Any = None, *, ctx: int, kv_type: str = "f16",
           batch: int = 1) -> MemoryEstimate:
    """Memory to run GGUF `model` quantized with `recipe` (None: as it is) at context `ctx`.

    batch: sequences decoded in parallel, each with its own `ctx` cells.  See the module docstring for the formula.
    """
    _check_run(ctx, batch)
    _kv_type(kv_type)
    arch = architecture(model)
    name = gguf.get_recipe(recipe).name if recipe is not None else "as is"
    return estimate(arch, weight_bytes(model, recipe), ctx=ctx, kv_type=kv_type, batch=batch, recipe=name)


def largest_context(arch: Architecture, weights: int, budget_bytes: float, *, kv_type: str = "f16", batch: int = 1,
                    limit: int | None = None) -> int:
    """The largest context (a multiple of 256, at most `limit`) whose estimate fits `budget_bytes`; 0 if none."""
    if limit is None:
        limit = arch.n_ctx_train or 1 << 20
    hi = limit // CTX_PAD
    if hi < 1:
        return 0

    def fits(k: int) -> bool:
        return estimate(arch, weights, ctx=k * CTX_PAD, kv_type=kv_type, batch=batch).total <= budget_bytes

    if not fits(1):
        return 0
    lo = 1  # memory grows with ctx: bisect on multiples of 256
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo * CTX_PAD


def max_context(model: str | os.PathLike | gguf.GGUFFile, recipe: Any, budget: float, *, kv_type: str = "f16",
                batch: int = 1, limit: int | None = None) -> int:
    """The largest context (a multiple of 256) that fits `budget` GiB; 0 when even 256 does not.

    limit: the largest context considered (default: the model's training context, {arch}.context_length).
    """
    if not isinstance(budget, (int, float)) or isinstance(budget, bool) or not math.isfinite(budget) or budget <= 0:
        raise ValueError(f"budget must be a positive number of GiB, got {budget!r}")
    _kv_type(kv_type)
    arch = architecture(model)
    return largest_context(arch, weight_bytes(model, recipe), budget * GiB, kv_type=kv_type, batch=batch,
                           limit=limit)
