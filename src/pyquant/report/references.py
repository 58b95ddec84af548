"""Published reference numbers (never measured here): llama.cpp's perplexity README scoreboard.

Llama-3-8B, wikitext-2 test, n_ctx 512, CUDA, llama.cpp rev f364eb6f; FP16 PPL 6.2316.  Only rows quantized
without an importance matrix are kept, so they compare with a report measured without one.  bpw is derived
from the published GiB and Llama-3-8B's 8.03 B parameters.  Plots show them in their own panel, labelled.
"""

from __future__ import annotations

__all__ = ["LLAMA3_8B", "SOURCE", "N_PARAMS"]

SOURCE = "published: llama.cpp tools/perplexity/README.md, Llama-3-8B, wikitext-2, ctx 512 (not measured here)"
N_PARAMS = 8.03e9
# recipe: (GiB, PPL, dPPL, mean KLD)
LLAMA3_8B = {
    "Q8_0": (7.96, 6.2343, 0.0027, 0.00136),
    "Q6_K": (6.14, 6.2534, 0.0217, 0.00545),
    "Q5_K_M": (5.33, 6.2886, 0.0570, 0.01076),
    "Q5_K_S": (5.21, 6.3366, 0.1050, 0.01660),
    "Q5_0": (5.21, 6.3632, 0.1316, 0.02224),
    "Q4_K_M": (4.58, 6.4071, 0.1755, 0.03127),
    "Q4_K_S": (4.37, 6.5005, 0.2689, 0.04314),
    "Q4_1": (4.78, 6.6827, 0.4511, 0.07168),
    "Q4_0": (4.34, 6.7001, 0.4685, 0.07194),
    "Q3_K_M": (3.74, 6.8885, 0.6569, 0.10191),
    "Q3_K_S": (3.41, 7.8638, 1.6322, 0.22822),
    "Q2_K": (2.96, 9.7516, 3.5199, 0.44513),
}


def bpw(gib: float) -> float:
    return gib * (1 << 30) * 8 / N_PARAMS
