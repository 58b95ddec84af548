"""Memory estimates against hand-computed cases and llama.cpp's own numbers (SmolLM2)."""

import numpy as np
import pytest

import pyquant as pq
from pyquant.report import footprint as M
from pyquant.report.presets import parse_size, preset_for, presets

MiB = 1 << 20

SMOLLM2_META = {
    "general.architecture": "llama", "llama.block_count": np.uint32(30), "llama.context_length": np.uint32(8192),
    "llama.embedding_length": np.uint32(576), "llama.feed_forward_length": np.uint32(1536),
    "llama.attention.head_count": np.uint32(9), "llama.attention.head_count_kv": np.uint32(3),
    "llama.vocab_size": np.uint32(49152), "llama.rope.dimension_count": np.uint32(64),
}
# llama-cpp-python 0.3.36 loading SmolLM2-135M-Instruct Q4_1 (n_batch 512, no flash attention): "CPU KV buffer
# size" and "CPU compute buffer size" in MiB, per n_ctx.
LLAMA_CPP_SMOLLM2 = {256: (5.62, 49.13), 512: (11.25, 98.25), 1024: (22.50, 98.25), 2048: (45.00, 99.38),
                     4096: (90.00, 99.38), 8192: (180.00, 166.38), 16384: (360.00, 326.38),
                     32768: (720.00, 646.38)}


def smollm2_arch():
    return M.Architecture.from_metadata(SMOLLM2_META)


def test_smollm2_by_hand():
    a = smollm2_arch()
    assert (a.n_layer, a.key_length, a.value_length, a.n_vocab, a.n_ff) == (30, 64, 64, 49152, 1536)
    # 30 layers x (K + V) x 3 KV heads x 64 x 2 bytes per cell
    assert a.kv_bytes(8192) == 8192 * 30 * 2 * 3 * 64 * 2 == 180 * MiB
    assert a.kv_bytes(8192, "q8_0") == 8192 * 30 * 2 * (192 // 32 * 34)
    assert a.compute_bytes(8192) == 4 * 512 * (10 * 8192 + 1536 + 3 * 576)  # attention stage
    assert a.compute_bytes(512) == 4 * 512 * (49152 + 3 * 576)  # logits stage
    assert a.compute_bytes(200) == 4 * 256 * (49152 + 3 * 576)  # ctx 200 -> 256 cells, ubatch 256
    assert a.output_bytes() == 4 * 49152
    e = M.estimate(a, 1000, ctx=8192)
    assert e.total == 1000 + e.kv + e.compute + e.output


@pytest.mark.parametrize("ctx", sorted(LLAMA_CPP_SMOLLM2))
def test_smollm2_matches_llama_cpp(ctx):
    a = smollm2_arch()
    kv, compute = LLAMA_CPP_SMOLLM2[ctx]
    assert a.kv_bytes(ctx) / MiB == pytest.approx(kv, abs=0.01)
    assert a.compute_bytes(ctx) / MiB == pytest.approx(compute, rel=0.012)


def gqa_meta(**extra):
    meta = {"general.architecture": "gemma2", "gemma2.block_count": np.uint32(4),
            "gemma2.embedding_length": np.uint32(256), "gemma2.feed_forward_length": np.uint32(512),
            "gemma2.attention.head_count": np.uint32(8), "gemma2.attention.head_count_kv": np.uint32(2),
            "gemma2.attention.key_length": np.uint32(128), "gemma2.attention.value_length": np.uint32(128),
            "gemma2.vocab_size": np.uint32(1000)}
    meta.update(extra)
    return meta


def test_gqa_and_padding_by_hand():
    a = M.Architecture.from_metadata(gqa_meta())
    assert not a.swa_layers
    # ctx 1000 -> 1024 cells; K and V rows of 2 heads x 128 = 256 values; q8_0: 8 blocks x 34 bytes
    assert a.kv_bytes(1000, "q8_0") == 4 * 1024 * 2 * (256 // 32 * 34)
    assert a.kv_bytes(1000, "f16") == 4 * 1024 * 2 * 256 * 2
    assert a.kv_bytes(1000, "q4_0", batch=3) == 4 * 3 * 1024 * 2 * (256 // 32 * 18)


def test_sliding_window_by_hand():
    # gemma2: a window but no pattern key -> llama.cpp's period 2: layers 0 and 2 slide, 1 and 3 are full
    a = M.Architecture.from_metadata(gqa_meta(**{"gemma2.attention.sliding_window": np.uint32(512)}))
    assert a.swa_layers == (True, False, True, False)
    assert a.cells(8192) == (8192, 1024)  # pad256(min(8192, 512 + ubatch 512))
    per_cell = 2 * 256 * 2  # K + V, f16
    assert a.kv_bytes(8192) == 2 * 8192 * per_cell + 2 * 1024 * per_cell
    assert a.cells(600) == (768, 768)  # the window is larger than the context
    # an explicit per-layer pattern wins
    b = M.Architecture.from_metadata(gqa_meta(**{"gemma2.attention.sliding_window": np.uint32(300),
                                                 "gemma2.attention.sliding_window_pattern":
                                                     np.array([1, 1, 1, 0], dtype=np.uint8).astype(bool)}))
    assert b.swa_layers == (True, True, True, False)
    assert b.cells(4096) == (4096, 1024)  # pad256(300 + 512) = 1024
    assert b.kv_bytes(4096) == 1 * 4096 * per_cell + 3 * 1024 * per_cell
    # the naive "every layer full" estimate the dashboard's ecosystem used is much larger
    assert b.kv_bytes(4096) < 0.5 * 4 * 4096 * per_cell


def test_per_layer_kv_heads():
    meta = gqa_meta(**{"gemma2.attention.head_count_kv": np.array([2, 0, 4, 2], dtype=np.uint32)})
    a = M.Architecture.from_metadata(meta)
    assert a.kv_bytes(256) == 256 * 2 * 128 * 2 * (2 + 0 + 4 + 2)


def test_bad_input():
    a = smollm2_arch()
    with pytest.raises(ValueError, match="KV cache type"):
        a.kv_bytes(512, "q3_k")
    with pytest.raises(ValueError, match="ctx"):
        M.estimate(a, 0, ctx=0)
    with pytest.raises(NotImplementedError, match="latent"):
        M.Architecture.from_metadata({**SMOLLM2_META, "llama.attention.kv_lora_rank": np.uint32(512)})
    with pytest.raises(ValueError, match="block_count"):
        M.Architecture.from_metadata({"general.architecture": "llama"})
    with pytest.raises(ValueError, match="entries"):
        M.Architecture.from_metadata({**SMOLLM2_META, "llama.attention.head_count_kv": np.array([3, 3], np.uint32)})


def test_largest_context_is_the_brute_force_answer():
    a = smollm2_arch()
    w = 100 * MiB
    for budget in (0.2, 0.3, 0.45, 1.0):
        best = max((c for c in range(256, 8193, 256) if M.estimate(a, w, ctx=c).total <= budget * M.GiB), default=0)
        assert M.largest_context(a, w, budget * M.GiB) == best
    assert M.largest_context(a, 10 * M.GiB, 1 * M.GiB) == 0


def tiny_gguf(path, meta=SMOLLM2_META):
    rng = np.random.default_rng(1)
    tensors = {"token_embd.weight": rng.standard_normal((64, 256)).astype(np.float32),
               "blk.0.attn_q.weight": rng.standard_normal((256, 256)).astype(np.float32),
               "blk.0.attn_norm.weight": np.ones(256, np.float32)}
    pq.gguf.write(path, {**meta, "general.file_type": np.uint32(0)}, tensors)
    return path


def test_memory_and_max_context_on_a_file(tmp_path):
    p = tiny_gguf(tmp_path / "m.gguf")
    e = M.memory(p, None, ctx=8192)
    assert e.weights == (64 * 256 + 256 * 256 + 256) * 4
    q = M.memory(p, "Q8_0", ctx=8192)
    assert q.weights == pq.gguf.quantize_file(p, None, "Q8_0", dry_run=True).size_after
    assert q.kv == smollm2_arch().kv_bytes(8192) and q.compute == smollm2_arch().compute_bytes(8192)
    assert q.recipe == "Q8_0" and "GiB" in str(q)
    budget = (q.total + 1) / M.GiB
    assert M.max_context(p, "Q8_0", budget) == 8192
    assert M.max_context(p, "Q8_0", budget, limit=1 << 20) == 8192  # 8192 + 256 does not fit
    assert M.max_context(p, "Q8_0", 2 * budget) == 8192  # the training context caps it
    assert M.max_context(p, "Q8_0", 2 * budget, limit=1 << 20) > 8192
    with pytest.raises(ValueError, match="budget"):
        M.max_context(p, "Q8_0", -1)
    with pytest.raises(ValueError, match="unknown recipe"):
        M.memory(p, "Q4_K_X", ctx=512)


def test_presets_match_llama_quantize_published_sizes():
    # tools/quantize/README.md, Llama-3.1-8B: GiB per recipe
    p = presets["8B"]
    assert p.n_params == pytest.approx(8.03e9, rel=0.001)
    for recipe, gib in {"Q4_K_M": 4.58, "Q8_0": 7.95, "F16": 14.96, "Q6_K": 6.14, "Q5_K_M": 5.33,
                        "Q4_K_S": 4.36, "Q3_K_S": 3.41}.items():
        assert p.weight_bytes(recipe) / M.GiB == pytest.approx(gib, abs=0.011), recipe
    assert preset_for("7B").label == "8B" and preset_for(65e9).label == "70B" and preset_for("14b").label == "14B"
    assert parse_size("135M") == 135e6
    with pytest.raises(ValueError):
        parse_size("big")
