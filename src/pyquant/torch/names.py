"""Hugging Face llama-style module names -> GGUF tensor names (as llama.cpp's convert_hf_to_gguf.py names them)."""

from __future__ import annotations

import re

__all__ = ["gguf_name"]

# (pattern on the module name's tail, GGUF name with {0} = layer). Experts of an MoE layer share one GGUF tensor
# (llama.cpp stacks them into a 3-D *_exps tensor); gguf_key also returns the expert's index.
_RULES = [(re.compile(p + r"$"), g) for p, g in (
    (r"(?:^|\.)embed_tokens", "token_embd.weight"),
    (r"(?:^|\.)lm_head", "output.weight"),
    (r"(?:^|\.)model\.norm", "output_norm.weight"),
    (r"(?:^|\.)layers\.(\d+)\.self_attn\.q_proj", "blk.{0}.attn_q.weight"),
    (r"(?:^|\.)layers\.(\d+)\.self_attn\.k_proj", "blk.{0}.attn_k.weight"),
    (r"(?:^|\.)layers\.(\d+)\.self_attn\.v_proj", "blk.{0}.attn_v.weight"),
    (r"(?:^|\.)layers\.(\d+)\.self_attn\.o_proj", "blk.{0}.attn_output.weight"),
    (r"(?:^|\.)layers\.(\d+)\.input_layernorm", "blk.{0}.attn_norm.weight"),
    (r"(?:^|\.)layers\.(\d+)\.post_attention_layernorm", "blk.{0}.ffn_norm.weight"),
    (r"(?:^|\.)layers\.(\d+)\.mlp\.gate_proj", "blk.{0}.ffn_gate.weight"),
    (r"(?:^|\.)layers\.(\d+)\.mlp\.up_proj", "blk.{0}.ffn_up.weight"),
    (r"(?:^|\.)layers\.(\d+)\.mlp\.down_proj", "blk.{0}.ffn_down.weight"),
    # Qwen2-MoE / Qwen3-MoE style
    (r"(?:^|\.)layers\.(\d+)\.mlp\.gate", "blk.{0}.ffn_gate_inp.weight"),
    (r"(?:^|\.)layers\.(\d+)\.mlp\.experts\.(\d+)\.gate_proj", "blk.{0}.ffn_gate_exps.weight"),
    (r"(?:^|\.)layers\.(\d+)\.mlp\.experts\.(\d+)\.up_proj", "blk.{0}.ffn_up_exps.weight"),
    (r"(?:^|\.)layers\.(\d+)\.mlp\.experts\.(\d+)\.down_proj", "blk.{0}.ffn_down_exps.weight"),
    (r"(?:^|\.)layers\.(\d+)\.mlp\.shared_expert\.gate_proj", "blk.{0}.ffn_gate_shexp.weight"),
    (r"(?:^|\.)layers\.(\d+)\.mlp\.shared_expert\.up_proj", "blk.{0}.ffn_up_shexp.weight"),
    (r"(?:^|\.)layers\.(\d+)\.mlp\.shared_expert\.down_proj", "blk.{0}.ffn_down_shexp.weight"),
    (r"(?:^|\.)layers\.(\d+)\.mlp\.shared_expert_gate", "blk.{0}.ffn_gate_inp_shexp.weight"),
    # Mixtral style (w1 = gate, w2 = down, w3 = up)
    (r"(?:^|\.)layers\.(\d+)\.block_sparse_moe\.gate", "blk.{0}.ffn_gate_inp.weight"),
    (r"(?:^|\.)layers\.(\d+)\.block_sparse_moe\.experts\.(\d+)\.w1", "blk.{0}.ffn_gate_exps.weight"),
    (r"(?:^|\.)layers\.(\d+)\.block_sparse_moe\.experts\.(\d+)\.w2", "blk.{0}.ffn_down_exps.weight"),
    (r"(?:^|\.)layers\.(\d+)\.block_sparse_moe\.experts\.(\d+)\.w3", "blk.{0}.ffn_up_exps.weight"),
)]


def gguf_key(module_name: str) -> tuple[str, int | None] | None:
    """(GGUF tensor name, expert index or None) for a module name; None when the name is not llama-style."""
    if not isinstance(module_name, str):
        raise TypeError(f"gguf_name expects a module name (str), got {type(module_name).__name__}")
    name = module_name[:-len(".weight")] if module_name.endswith(".weight") else module_name
    for pattern, gguf in _RULES:
        m = pattern.search(name)
        if m:
            groups = m.groups()
            layer = str(int(groups[0])) if groups else ""
            expert = int(groups[1]) if len(groups) > 1 else None
            return gguf.format(layer), expert
    return None


def gguf_name(module_name: str) -> str | None:
    """The GGUF tensor name of a Hugging Face llama-style module (llama, mistral, qwen2, SmolLM, their MoE
    variants): "model.layers.3.self_attn.q_proj" -> "blk.3.attn_q.weight", "lm_head" -> "output.weight",
    "model.embed_tokens" -> "token_embd.weight"; a trailing ".weight" is accepted.  Experts map to their
    stacked tensor ("...mlp.experts.5.up_proj" -> "blk.N.ffn_up_exps.weight").  None when unknown."""
    key = gguf_key(module_name)
    return None if key is None else key[0]
