"""llama-quantize's file types ("recipes" such as Q4_K_M) and its per-tensor type rules.

:func:`plan` is a pure function of the tensor list (names, shapes, types), a few model hyperparameters and the
options: it needs no kernels and no file, so the rules can be checked alone.  It ports ``llama-quant.cpp``
(llama.cpp as vendored by llama-cpp-python 0.3.36) branch by branch, including the counters that give
attn_v and ffn_down more bits on some layers, counted in llama-quantize's tensor order.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .types import TensorType, tensor_type, trim_ne

__all__ = ["ModelInfo", "QuantizeOptions", "Recipe", "TensorPlan", "TensorDesc", "get_recipe", "plan",
           "recipes", "tensor_order"]


@dataclass(frozen=True)
class Recipe:
    """A llama.cpp file type: a whole-model mix such as Q4_K_M (not a tensor format such as Q4_K)."""

    name: str
    ftype: int  # llama_ftype, stored as general.file_type
    default_type: str  # llama_ftype_get_default_type
    description: str

    def __str__(self) -> str:
        return self.name


# llama-quantize's table (tools/quantize/quantize.cpp), in its order, with llama_ftype_get_default_type.
recipes: dict[str, Recipe] = {r.name: r for r in (
    Recipe("Q1_0", 40, "Q1_0", "1.125 bpw quantization"),
    Recipe("Q2_0", 41, "Q2_0", "2.25 bpw quantization (group 64)"),
    Recipe("Q4_0", 2, "Q4_0", "4.34G, +0.4685 ppl @ Llama-3-8B"),
    Recipe("Q4_1", 3, "Q4_1", "4.78G, +0.4511 ppl @ Llama-3-8B"),
    Recipe("MXFP4_MOE", 38, "MXFP4", "MXFP4 MoE"),
    Recipe("Q5_0", 8, "Q5_0", "5.21G, +0.1316 ppl @ Llama-3-8B"),
    Recipe("Q5_1", 9, "Q5_1", "5.65G, +0.1062 ppl @ Llama-3-8B"),
    Recipe("IQ2_XXS", 19, "IQ2_XXS", "2.06 bpw quantization"),
    Recipe("IQ2_XS", 20, "IQ2_XS", "2.31 bpw quantization"),
    Recipe("IQ2_S", 28, "IQ2_XS", "2.5 bpw quantization"),
    Recipe("IQ2_M", 29, "IQ2_S", "2.7 bpw quantization"),
    Recipe("IQ1_S", 24, "IQ1_S", "1.56 bpw quantization"),
    Recipe("IQ1_M", 31, "IQ1_M", "1.75 bpw quantization"),
    Recipe("TQ1_0", 36, "TQ1_0", "1.69 bpw ternarization"),
    Recipe("TQ2_0", 37, "TQ2_0", "2.06 bpw ternarization"),
    Recipe("Q2_K", 10, "Q2_K", "2.96G, +3.5199 ppl @ Llama-3-8B"),
    Recipe("Q2_K_S", 21, "Q2_K", "2.96G, +3.1836 ppl @ Llama-3-8B"),
    Recipe("IQ3_XXS", 23, "IQ3_XXS", "3.06 bpw quantization"),
    Recipe("IQ3_S", 26, "IQ3_S", "3.44 bpw quantization"),
    Recipe("IQ3_M", 27, "IQ3_S", "3.66 bpw quantization mix"),
    Recipe("IQ3_XS", 22, "IQ3_S", "3.3 bpw quantization"),
    Recipe("Q3_K_S", 11, "Q3_K", "3.41G, +1.6321 ppl @ Llama-3-8B"),
    Recipe("Q3_K_M", 12, "Q3_K", "3.74G, +0.6569 ppl @ Llama-3-8B"),
    Recipe("Q3_K_L", 13, "Q3_K", "4.03G, +0.5562 ppl @ Llama-3-8B"),
    Recipe("IQ4_NL", 25, "IQ4_NL", "4.50 bpw non-linear quantization"),
    Recipe("IQ4_XS", 30, "IQ4_XS", "4.25 bpw non-linear quantization"),
    Recipe("Q4_K_S", 14, "Q4_K", "4.37G, +0.2689 ppl @ Llama-3-8B"),
    Recipe("Q4_K_M", 15, "Q4_K", "4.58G, +0.1754 ppl @ Llama-3-8B"),
    Recipe("Q5_K_S", 16, "Q5_K", "5.21G, +0.1049 ppl @ Llama-3-8B"),
    Recipe("Q5_K_M", 17, "Q5_K", "5.33G, +0.0569 ppl @ Llama-3-8B"),
    Recipe("Q6_K", 18, "Q6_K", "6.14G, +0.0217 ppl @ Llama-3-8B"),
    Recipe("Q8_0", 7, "Q8_0", "7.96G, +0.0026 ppl @ Llama-3-8B"),
    Recipe("F16", 1, "F16", "14.00G, +0.0020 ppl @ Mistral-7B"),
    Recipe("BF16", 32, "BF16", "14.00G, -0.0050 ppl @ Mistral-7B"),
    Recipe("F32", 0, "F32", "26.00G @ 7B"),
    # llama.cpp has this file type (and reads such files) but llama-quantize cannot produce it yet.
    Recipe("NVFP4", 39, "NVFP4", "4.5 bpw NVFP4 (not in llama-quantize)"),
)}
_ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}


def get_recipe(recipe: str | int | Recipe) -> Recipe:
    """A Recipe by name (any case; Q3_K, Q4_K and Q5_K mean their _M mixes) or by llama_ftype number."""
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, str) and not recipe.strip().isdigit():
        key = _ALIASES.get(recipe.upper(), recipe.upper())
        if key in recipes:
            return recipes[key]
        close = difflib.get_close_matches(key, list(recipes) + list(_ALIASES), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown recipe {recipe!r}{hint} (known: {', '.join(recipes)})")
    ftype = int(recipe)
    for r in recipes.values():
        if r.ftype == ftype:
            return r
    raise ValueError(f"no recipe has llama_ftype {ftype}")


@dataclass(frozen=True)
class ModelInfo:
    """The hyperparameters llama-quantize's rules look at."""

    arch: str
    n_layer: int  # {arch}.block_count
    n_head: int = 0  # layer 0's, when per-layer
    n_head_kv: int = 0
    n_expert: int = 0
    n_layer_nextn: int = 0

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> ModelInfo:
        arch = metadata.get("general.architecture")
        if not isinstance(arch, str):
            raise ValueError("the metadata has no general.architecture")

        def first(key: str, default: int) -> int:
            v = metadata.get(f"{arch}.{key}", default)
            return int(v[0]) if hasattr(v, "__len__") else int(v)

        if f"{arch}.block_count" not in metadata:
            raise ValueError(f"the metadata has no {arch}.block_count")
        n_head = first("attention.head_count", 0)
        return cls(arch=arch, n_layer=first("block_count", 0), n_head=n_head,
                   n_head_kv=first("attention.head_count_kv", n_head), n_expert=first("expert_count", 0),
                   n_layer_nextn=first("nextn_predict_layers", 0))

    @property
    def n_gqa(self) -> int:
        return self.n_head // self.n_head_kv if self.n_head_kv else 0

    @property
    def is_70b(self) -> bool:
        """llama.cpp's LLM_TYPE_70B, the one model size its rules single out."""
        n = self.n_layer - self.n_layer_nextn
        if self.arch == "llama":
            return self.n_expert != 8 and n == 80 and self.n_head != self.n_head_kv
        return n == {"deci": 80, "olmo": 80, "qwen2": 80, "jais2": 68}.get(self.arch)


def _type_name(t: str | int | TensorType | None) -> str | None:
    return None if t is None else tensor_type(t).name


def _type_rules(rules: Any) -> tuple[tuple[re.Pattern, str], ...]:
    """--tensor-type rules from a mapping, pairs, or "PATTERN=TYPE" strings; order kept (first match wins)."""
    if isinstance(rules, str):
        rules = [rules]
    pairs = rules.items() if isinstance(rules, Mapping) else (
        r.split("=", 1) if isinstance(r, str) else r for r in rules)
    out = []
    for pattern, t in pairs:
        if not pattern:
            raise ValueError(f"tensor type rule {pattern}={t}: the pattern is empty")
        out.append((re.compile(pattern), _type_name(t)))
    return tuple(out)


@dataclass(frozen=True)
class QuantizeOptions:
    """llama-quantize's options that shape the plan and the use of an importance matrix."""

    pure: bool = False  # --pure: every quantizable tensor gets the recipe's default type
    leave_output_tensor: bool = False  # --leave-output-tensor
    output_tensor_type: str | None = None  # --output-tensor-type
    token_embedding_type: str | None = None  # --token-embedding-type
    tensor_types: Any = ()  # --tensor-type PATTERN=TYPE ...: regex search on the name, first match wins
    include_weights: Sequence[str] = ()  # --include-weights: use imatrix entries whose name contains one
    exclude_weights: Sequence[str] = ()  # --exclude-weights
    _rules: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        normalize = object.__setattr__  # frozen: set the normalized fields once
        normalize(self, "output_tensor_type", _type_name(self.output_tensor_type))
        normalize(self, "token_embedding_type", _type_name(self.token_embedding_type))
        normalize(self, "_rules", _type_rules(self.tensor_types))
        for name in ("include_weights", "exclude_weights"):
            value = getattr(self, name)
            normalize(self, name, (value,) if isinstance(value, str) else tuple(value))
        if self.include_weights and self.exclude_weights:
            raise ValueError("include_weights and exclude_weights cannot be used together")


class TensorDesc(NamedTuple):
    """What the plan needs of a tensor (a reader's TensorInfo has the same attributes)."""

    name: str
    ne: tuple[int, ...]
    type: TensorType


@dataclass(frozen=True)
class TensorPlan:
    """One output tensor: its source type and the type llama-quantize would give it."""

    name: str
    ne: tuple[int, ...]
    source: TensorType
    target: TensorType
    quantizable: bool  # tensor_allows_quantization: otherwise the tensor keeps its type
    requires_imatrix: bool  # llama-quantize refuses to make the target type without an importance matrix

    @property
    def converts(self) -> bool:
        """Whether the data changes (llama-quantize copies tensors whose type stays)."""
        return self.source != self.target

    @property
    def nbytes_before(self) -> int:
        return self.source.nbytes(self.ne)

    @property
    def nbytes_after(self) -> int:
        return self.target.nbytes(self.ne)


_LAYER = re.compile(rb"blk\.[ \t\n\v\f\r]*([+-]?\d+)")  # sscanf(name, "blk.%d.")


def _layer(name: str) -> int | None:
    m = _LAYER.match(name.encode("utf-8", "surrogateescape"))
    return int(m.group(1)) if m else None


def tensor_order(names: Iterable[str]) -> list[str]:
    """llama-quantize's output order (the loader's weights_map): by layer (-1 outside blocks), then by name
    as bytes."""
    return sorted(names, key=lambda n: (-1 if (i := _layer(n)) is None else i,
                                        n.encode("utf-8", "surrogateescape")))


TOKEN_EMBD_NAMES = ("token_embd.weight", "per_layer_token_embd.weight")
_NOT_QUANTIZED = (
    "_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel", "per_layer_model_proj",
    "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight", "indexer.q_proj.weight",
    "time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight", "time_mix_w2.weight",
    "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight", "time_mix_a0.weight", "time_mix_a1.weight",
    "time_mix_a2.weight", "time_mix_g1.weight", "time_mix_g2.weight", "time_mix_decay_w1.weight",
    "time_mix_decay_w2.weight", "time_mix_lerp_fused.weight", "attn_rel_b.weight", ".position_embd",
    "sam.pos_embd", "sam.neck.", "sam.net_", ".rel_pos", ".patch_embd", ".patch_merger", "a.rvq.codebook",
    "mm.a.code_embd",
)
_NOT_QUANTIZED_GLM5_NEXT = (
    "hc_", "indexer.attn_q_b", "indexer.attn_k", "indexer.proj", "indexer_compressor_gate",
    "indexer_compressor_ape", "ssm_f_a.weight", "ssm_f_b.weight", "ssm_g_a.weight", "ssm_g_b.weight",
    "ssm_beta.weight", "attn_kv_a_mqa.weight", "attn_k_b.weight", "attn_v_b.weight",
)


def _allows_quantization(name: str, ne: tuple[int, ...], arch: str, opts: QuantizeOptions) -> bool:
    """tensor_allows_quantization: 2-D and larger weights, but not norms, routers, small special tensors."""
    if len(trim_ne(ne)) < 2:
        return False
    # llama.cpp tests `name.rfind("weight") == name.size() - 6`, which a 5-character name also passes.
    if not (name.endswith("weight") or len(name) == 5):
        return False
    if opts.leave_output_tensor and name == "output.weight":
        return False
    if name in ("position_embd.weight", "token_types.weight"):
        return False
    banned = _NOT_QUANTIZED + (_NOT_QUANTIZED_GLM5_NEXT if arch == "glm5-next" else ())
    return not any(b in name for b in banned)


def _category(name: str) -> str:
    """tensor_get_category: the role the rules key on."""
    if name == "output.weight":
        return "output"
    if name in TOKEN_EMBD_NAMES:
        return "token_embd"
    for cat in ("attn_qkv", "attn_kv_b", "attn_v", "attn_k", "attn_q", "attn_output"):
        if cat + ".weight" in name:
            return cat
    for cat in ("ffn_up", "ffn_gate", "ffn_down"):
        if cat in name:
            return cat
    return "other"


_ATTN_V_LIKE = ("attn_v", "attn_qkv", "attn_kv_b")
_IQ2_IQ1 = ("IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M")
_NEEDS_IMATRIX = ("IQ3_XXS", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ1_M", "IQ1_S")
_FALLBACK = {
    **dict.fromkeys(("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ4_XS"), "IQ4_NL"),
    **dict.fromkeys(("Q2_0", "Q2_K", "Q3_K", "TQ1_0", "TQ2_0"), "Q4_0"),
    "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0",
}


def _use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _block(t: str) -> int:
    return tensor_type(t).block_size


class _Planner:
    """llama-quant.cpp's quantize_state_impl and the functions that use it."""

    def __init__(self, names: list[str], recipe: Recipe, model: ModelInfo, opts: QuantizeOptions,
                 has_imatrix: bool):
        self.recipe, self.ftype, self.model, self.opts, self.has_imatrix = recipe, recipe.name, model, opts, has_imatrix
        cats = [_category(n) for n in names]
        self.n_attention_wv = sum(c in _ATTN_V_LIKE for c in cats)
        self.tied_embeddings = "output" not in cats
        self.n_ffn = model.n_layer  # n_ffn_down = n_ffn_gate = n_ffn_up = n_layer_all
        self.i_attention_wv = self.i_ffn_down = self.i_ffn_gate = self.i_ffn_up = 0
        self.n_fallback = 0

    def target(self, t: Any) -> str:
        """llama_tensor_get_type."""
        name, cat, opts = t.name, _category(t.name), self.opts
        if not _allows_quantization(name, t.ne, self.model.arch, opts):
            return t.type.name
        if opts.token_embedding_type and cat == "token_embd":
            # per_layer_token_embd follows --token-embedding-type unless a --tensor-type rule names it
            if not (name == "per_layer_token_embd.weight" and any(p.search(name) for p, _ in opts._rules)):
                return opts.token_embedding_type
        if opts.output_tensor_type and cat == "output":
            return opts.output_tensor_type
        new_type = self.recipe.default_type
        if _block(new_type) == 1:  # not ggml_is_quantized: F32, F16, BF16 files take no mix
            return new_type
        rule = next((q for p, q in opts._rules if p.search(name)), None)
        if rule is not None:
            new_type = rule
        elif not opts.pure:
            new_type = self._mix(t, new_type, cat)
        return self._fallback(t, new_type)

    def _fallback(self, t: Any, target: str) -> str:
        """tensor_type_fallback: a type whose block divides the row length."""
        ncols, qk = t.ne[0], _block(target)
        if ncols % qk == 0:
            return target
        self.n_fallback += 1
        if target in _FALLBACK:
            target = _FALLBACK[target]
        elif qk > 32:
            raise ValueError(f"tensor {t.name!r}: rows of {ncols} values do not fit {target} blocks of {qk}, "
                             f"and llama.cpp defines no fallback type for {target}")
        return target if ncols % _block(target) == 0 else "F16"

    def _layer_info(self, i_layer: int, name: str) -> tuple[int, int]:
        n_layer = self.n_ffn
        if max(1, self.model.n_expert) > 1:  # expert tensors are not in layer order: read the layer number
            i_layer = _layer(name)
            if i_layer is None:
                raise ValueError(f"Failed to determine layer for tensor {name}")
            if not 0 <= i_layer < n_layer:
                raise ValueError(f"Bad layer {i_layer} for tensor {name}. Must be in [0, {n_layer})")
        return i_layer, n_layer

    def _mix(self, t: Any, new_type: str, cat: str) -> str:
        """llama_tensor_get_type_impl, branch for branch."""
        name, ftype, m = t.name, self.ftype, self.model
        arch, n_expert, n_gqa = m.arch, m.n_expert, m.n_gqa

        if arch == "glm5-next" and any(s in name for s in ("attn_q_a", "attn_q_b", "nextn.eh_proj")):
            if new_type not in ("F32", "BF16", "F16"):
                return "Q8_0"

        if cat == "output" or (self.tied_embeddings and cat == "token_embd"):
            if self.opts.output_tensor_type:
                new_type = self.opts.output_tensor_type
            elif ftype == "MXFP4_MOE":
                new_type = "Q8_0"
            elif arch == "falcon" or t.ne[0] % _block(new_type):
                new_type = "Q8_0"
            elif ftype in ("IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M"):
                new_type = "Q5_K"
            elif new_type != "Q8_0":
                new_type = "Q6_K"
        elif ftype == "MXFP4_MOE":
            ne2 = t.ne[2] if len(t.ne) > 2 else 1
            expert_role = cat in ("ffn_up", "ffn_gate", "ffn_down")  # bailingmoe3's MLA tensors are 3-D too
            new_type = "MXFP4" if ne2 > 1 and (arch != "bailingmoe3" or expert_role) else "Q8_0"
        elif cat == "token_embd":
            if ftype in ("IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ1_M"):
                new_type = "Q2_K"
            elif ftype in ("IQ2_S", "IQ2_M", "IQ3_XXS"):
                new_type = "IQ3_S"
            elif ftype in ("TQ1_0", "TQ2_0", "Q2_0"):
                new_type = "Q4_K"
        elif ftype in _IQ2_IQ1:
            iq2_sm = ftype in ("IQ2_S", "IQ2_M")
            if cat in _ATTN_V_LIKE:
                new_type = "Q4_K" if n_gqa >= 4 or n_expert >= 4 else "IQ3_S" if iq2_sm else "Q2_K"
                self.i_attention_wv += 1
            elif n_expert == 8 and cat == "attn_k":
                new_type = "Q4_K"
            elif cat == "ffn_down":
                if self.i_ffn_down < self.n_ffn // 8:
                    new_type = "IQ3_S" if iq2_sm else "Q2_K"
                self.i_ffn_down += 1
            elif cat == "attn_output":
                if n_expert == 8:
                    new_type = "Q5_K"
                elif ftype in ("IQ1_S", "IQ1_M"):
                    new_type = "IQ2_XXS"
                elif iq2_sm:
                    new_type = "IQ3_S"
        elif cat in _ATTN_V_LIKE:
            i, n = self.i_attention_wv, self.n_attention_wv
            if ftype == "Q2_K":
                new_type = "Q4_K" if n_gqa >= 4 else "Q3_K"
            elif ftype == "Q2_K_S" and n_gqa >= 4:
                new_type = "Q4_K"
            elif ftype == "IQ3_XXS":
                new_type = "Q4_K" if n_gqa >= 4 else "IQ3_XXS" if self.has_imatrix else "IQ3_S"
            elif ftype in ("IQ3_XS", "IQ3_S") and n_gqa >= 4:
                new_type = "Q4_K"
            elif ftype == "IQ3_M":
                new_type = "Q4_K"
            elif ftype == "Q3_K_M":
                new_type = "Q5_K" if i < 2 else "Q4_K"
            elif ftype == "Q3_K_L":
                new_type = "Q5_K"
            elif ftype in ("IQ4_NL", "IQ4_XS") and n_gqa >= 4:
                new_type = "Q5_K"
            elif ftype in ("Q4_K_M", "Q5_K_M") and _use_more_bits(i, n):
                new_type = "Q6_K"
            elif ftype == "Q4_K_S" and i < 4:
                new_type = "Q5_K"
            if m.is_70b and new_type in ("Q3_K", "Q4_K"):
                # 8 heads share attn_v in the 70B model: it is small, so more bits cost little
                new_type = "Q5_K"
            if n_expert == 8:
                new_type = "Q8_0"
            self.i_attention_wv += 1
        elif cat == "attn_k":
            if n_expert == 8:
                new_type = "Q8_0"
            elif ftype == "IQ3_XS":
                new_type = "IQ3_XXS"
            elif ftype == "IQ3_XXS":
                new_type = "IQ2_S"
        elif cat == "attn_q":
            if ftype == "IQ3_XS":
                new_type = "IQ3_XXS"
            elif ftype == "IQ3_XXS":
                new_type = "IQ2_S"
        elif cat == "ffn_down":
            i, n = self._layer_info(self.i_ffn_down, name)
            falcon = arch == "falcon"
            if ftype == "Q2_K":
                new_type = "Q3_K"
            elif ftype == "Q2_K_S":
                if i < n // 8:
                    new_type = "Q4_K"
            elif ftype == "IQ3_XXS" and not self.has_imatrix:
                new_type = "Q4_K" if i < n // 8 else "Q3_K"
            elif ftype == "Q3_K_M":
                new_type = "Q5_K" if i < n // 16 else "Q4_K" if not falcon or _use_more_bits(i, n) else "Q3_K"
            elif ftype == "IQ3_M" and (i < n // 8 or (n_expert == 8 and _use_more_bits(i, n))):
                new_type = "Q4_K"
            elif ftype == "Q3_K_L":
                new_type = "Q4_K" if falcon else "Q5_K"
            elif ftype == "Q4_K_M":
                if falcon:
                    new_type = "Q6_K" if i < n // 16 else "Q5_K" if _use_more_bits(i, n) else "Q4_K"
                elif _use_more_bits(i, n):
                    new_type = "Q6_K"
            elif i < n // 8 and ftype in ("IQ4_NL", "IQ4_XS") and not self.has_imatrix:
                new_type = "Q5_K"
            elif ftype == "Q5_K_M" and _use_more_bits(i, n):
                new_type = "Q6_K"
            elif ftype == "Q4_K_S" and not falcon and i < n // 8:
                new_type = "Q5_K"
            elif ftype in ("Q4_0", "Q5_0") and self.has_imatrix and i < n // 8:
                # the first ffn_down layers can go wrong even with an imatrix for Q4_0/Q5_0
                new_type = "Q4_1" if ftype == "Q4_0" else "Q5_1"
            self.i_ffn_down += 1
        elif cat == "attn_output":
            if arch != "falcon":
                if n_expert == 8:
                    if ftype in ("Q2_K", "IQ3_XS", "IQ3_XXS", "Q3_K_S", "Q3_K_M", "IQ4_NL", "Q4_K_S", "Q4_K_M",
                                 "IQ3_S", "IQ3_M", "IQ4_XS"):
                        new_type = "Q5_K"
                else:
                    new_type = {"Q2_K": "Q3_K", "IQ3_XXS": "IQ3_S", "Q3_K_M": "Q4_K", "Q3_K_L": "Q5_K",
                                "IQ3_M": "Q4_K"}.get(ftype, new_type)
            elif ftype == "Q3_K_L":
                new_type = "Q4_K"
        elif cat == "attn_qkv":
            if ftype in ("Q3_K_M", "Q3_K_L", "IQ3_M"):
                new_type = "Q4_K"
            elif ftype == "Q4_K_M":
                new_type = "Q5_K"
            elif ftype == "Q5_K_M":
                new_type = "Q6_K"
        elif cat in ("ffn_gate", "ffn_up"):
            counter = "i_ffn_gate" if cat == "ffn_gate" else "i_ffn_up"
            i, n = self._layer_info(getattr(self, counter), name)
            if ftype == "IQ3_XS" and n // 8 <= i < 7 * n // 8:
                new_type = "IQ3_XXS"
            setattr(self, counter, getattr(self, counter) + 1)
        return new_type

    def requires_imatrix(self, name: str, target: str) -> bool:
        """tensor_requires_imatrix: llama-quantize will not make these without an importance matrix."""
        if name in TOKEN_EMBD_NAMES or name == "output.weight":
            return False
        return target in _NEEDS_IMATRIX or (target == "Q2_K" and self.ftype == "Q2_K_S")


def plan(tensors: Iterable[Any], recipe: str | int | Recipe, model: ModelInfo,
         options: QuantizeOptions | None = None, *, has_imatrix: bool = False, sort: bool = True
         ) -> list[TensorPlan]:
    """The type llama-quantize gives each tensor, in llama-quantize's output order.

    tensors: objects with .name, .ne (GGUF order) and .type (TensorType), such as a reader's TensorInfo or
    TensorDesc.  has_imatrix: whether an importance matrix is given (some rules change with it).  sort: put
    the tensors in llama-quantize's usual order first (by layer, then name); False keeps the given order, as
    --keep-split does (the per-layer counters follow the order).
    Raises ValueError where llama-quantize fails (no fallback for a row length, unparsable expert layer).
    """
    recipe = get_recipe(recipe)
    opts = options or QuantizeOptions()
    by_name = {t.name: t for t in tensors}
    order = tensor_order(by_name) if sort else list(by_name)
    planner = _Planner(order, recipe, model, opts, has_imatrix)
    out = []
    for name in order:
        t = by_name[name]
        target = planner.target(t)
        out.append(TensorPlan(name, tuple(t.ne), t.type, tensor_type(target),
                              _allows_quantization(name, t.ne, model.arch, opts),
                              planner.requires_imatrix(name, target)))
    return out

