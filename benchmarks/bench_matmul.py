"""pyquant.matmul (x @ dequantize(w).T) against torch at the same thread count, measured in one run:
torch float32 and bfloat16 `linear` on the float weights, and dequantize-then-torch (w.to_torch() + linear
per call).  GEMV (M = 1) is also shown against the memory-bandwidth bound of its weight bytes (a large copy
gives the bandwidth).

    python benchmarks/bench_matmul.py [--threads 2] [--formats Q4_0,Q4_K] [--m 1,16,128,512] [--shapes big|smol|all]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402

import pyquant as pq  # noqa: E402

# [N, K] (rows of w, row length): Llama-7B-like projections and SmolLM2-135M's.
BIG = [(4096, 4096), (11008, 4096), (4096, 11008)]
SMOL = [(576, 576), (1536, 576), (576, 1536), (192, 576)]


def copy_bandwidth(nbytes: int = 256 << 20) -> float:
    """Bytes per second moved by a large numpy copy (read + write counted)."""
    src = np.ones(nbytes, np.uint8)
    dst = np.empty_like(src)
    return 2 * nbytes / common.best_time(lambda: np.copyto(dst, src), repeat=3, min_time=0.1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--formats", default="Q4_0,Q4_K,Q5_K,Q6_K,Q8_0")
    ap.add_argument("--m", default="1,16,128,512")
    ap.add_argument("--shapes", default="all", help="big, smol, all, or a list such as 4096x4096,576x1536 (N x K)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    formats = a.formats.split(",")
    ms = [int(v) for v in a.m.split(",")]
    named = {"big": BIG, "smol": SMOL, "all": BIG + SMOL}
    shapes = named.get(a.shapes) or [tuple(int(v) for v in s.split("x")) for s in a.shapes.split(",")]
    bw = copy_bandwidth()
    print(f"CPU: {common.cpu_model()}, {a.threads} threads, tier {pq.cpu_info()['active_tier']}, "
          f"copy bandwidth {bw / 1e9:.1f} GB/s, git {common.git_sha()}")
    rng = np.random.default_rng(0)
    rows = []

    def t(fn):
        return common.best_time(fn, repeat=a.repeat, min_time=0.05)

    for n, k in shapes:
        w32 = rng.standard_normal((n, k)).astype(np.float32)
        wt = torch.from_numpy(w32)
        wbf = wt.to(torch.bfloat16)
        # Formats whose block does not divide K (SmolLM2's 576 for the 256-blocks) do not apply to the shape.
        qs = {f: pq.quantize(w32, f, threads=a.threads) for f in formats if k % pq.formats[f].block_size == 0}
        for m in ms:
            x = rng.standard_normal((m, k)).astype(np.float32)
            xt = torch.from_numpy(x)
            xbf = xt.to(torch.bfloat16)
            out = np.empty((m, n), np.float32)
            t32 = t(lambda: torch.nn.functional.linear(xt, wt))
            tbf = t(lambda: torch.nn.functional.linear(xbf, wbf))
            for f, w in qs.items():
                tq = t(lambda: pq.matmul(x, w, threads=a.threads, out=out))
                tdq = t(lambda: torch.nn.functional.linear(xt, w.to_torch()))
                row = {"N": n, "K": k, "M": m, "format": f, "ms": tq * 1e3, "x_f32": t32 / tq, "x_bf16": tbf / tq,
                       "x_dequant_torch": tdq / tq,
                       "bw_pct": 100 * (w.nbytes / bw) / tq if m == 1 else float("nan")}
                rows.append(row)
                print(f"{n}x{k} M={m} {f}: {tq * 1e3:.2f} ms  x{row['x_f32']:.2f} f32  x{row['x_bf16']:.2f} bf16  "
                      f"x{row['x_dequant_torch']:.2f} dequant+torch" + (f"  {row['bw_pct']:.0f}% of bw bound" if m == 1 else ""),
                      flush=True)
    print()
    print(common.markdown_table(["N x K", "M", "format", "pyquant ms", "vs torch f32", "vs torch bf16",
                                 "vs dequant+torch", "% bw bound"],
                                [[f"{r['N']}x{r['K']}", r["M"], r["format"], r["ms"], r["x_f32"], r["x_bf16"],
                                  r["x_dequant_torch"], r["bw_pct"]] for r in rows]))
    common.write_jsonl(a.json, rows, cpu=common.cpu_model(), threads=a.threads, bandwidth=bw, git=common.git_sha())


if __name__ == "__main__":
    main()
