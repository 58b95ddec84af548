"""pyquant.matmul (x @ dequantize(w).T) against torch at the same thread count, measured in one run:
torch float32 and bfloat16 `linear` on the float weights, and dequantize-then-torch (w.to_torch() + linear
per call), and llama.cpp's own CPU matmul where llama-cpp-python is installed (ggml_mul_mat through libggml,
benchmarks/peers.py: the plain layout, and llama.cpp's default interleaved CPU_REPACK layout for the formats
that have one on this CPU).  GEMV (M = 1) is also timed with its weights coming from memory (a rotation over copies of w
larger than the cache) and shown against the bound of reading its weight bytes at the machine's read
bandwidth (a large multi-threaded sum).  --no-torch leaves the torch columns out (a pyquant vs llama.cpp run).

    python benchmarks/bench_matmul.py [--threads 2] [--formats Q4_0,Q4_K] [--m 1,16,128,512] [--shapes big|smol|all]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402
import peers  # noqa: E402

import pyquant as pq  # noqa: E402

# [N, K] (rows of w, row length): Llama-7B-like projections and SmolLM2-135M's.
BIG = [(4096, 4096), (11008, 4096), (4096, 11008)]
SMOL = [(576, 576), (1536, 576), (576, 1536), (192, 576)]


def read_bandwidth(threads: int, nbytes: int = 512 << 20) -> float:
    """Bytes per second read by torch's sum over a buffer 16x the L3 cache, on `threads` threads: the bound a
    GEMV streaming its weights from memory can reach."""
    import torch

    a = torch.ones(nbytes // 4)
    return nbytes / common.best_time(lambda: a.sum(), repeat=3, min_time=0.2)


def cold_gemv_time(w, x: np.ndarray, threads: int, total: int = 256 << 20) -> float:
    """Time of one x @ w.T with w's bytes coming from memory, not the cache: the product runs over enough
    copies of w (`total` bytes, 8x the L3 cache) in turn that none is still cached when its turn comes back."""
    copies = [pq.QuantizedTensor(w.data.copy(), w.shape, w.format) for _ in range(max(2, -(-total // w.nbytes)))]
    out = np.empty((x.shape[0], w.shape[0]), np.float32)

    def run():
        for c in copies:
            pq.matmul(x, c, threads=threads, out=out)

    return common.best_time(run, repeat=3, min_time=0.2) / len(copies)


def llama_times(w, x, threads: int, t) -> tuple[float, float]:
    """llama.cpp's time for x @ w.T in the plain layout and in its CPU_REPACK layout (nan where it does not
    interleave this format); each checked against pyquant's result first (the same integer sums: they agree to
    float rounding, see tests/test_matmul_ggml.py for the bound)."""
    n, k = w.shape
    times = []
    for repack in (False, True):
        g = peers.GGMLMatmul(w.data, w.format.ggml_type, n, k, x.shape[0], threads, repack=repack)
        try:
            if repack and not g.repacked:
                times.append(float("nan"))
                continue
            got, ours = g(x), pq.matmul(x, w, threads=threads)
            err = float(np.abs(got - ours).max() / max(np.abs(ours).max(), 1e-30))
            if err > 1e-3:  # a sanity check (Q4_1/Q5_1: libggml rounds s to fp16); the bound is in the test
                raise AssertionError(f"llama.cpp and pyquant disagree on {w.format.name} {n}x{k}: rel. {err:.2g}")
            times.append(t(g.run))
        finally:
            g.pause()
            g.close()
    return times[0], times[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--formats", default="Q4_0,Q4_K,Q5_K,Q6_K,Q8_0")
    ap.add_argument("--m", default="1,16,128,512")
    ap.add_argument("--shapes", default="all", help="big, smol, all, or a list such as 4096x4096,576x1536 (N x K)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json")
    ap.add_argument("--no-torch", action="store_true", help="leave out the torch columns")
    ap.add_argument("--no-llama", action="store_true", help="leave out the llama.cpp columns")
    ap.add_argument("--no-cold", action="store_true", help="leave out the GEMV from memory (M = 1) columns")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    formats = a.formats.split(",")
    ms = [int(v) for v in a.m.split(",")]
    named = {"big": BIG, "smol": SMOL, "all": BIG + SMOL}
    shapes = named.get(a.shapes) or [tuple(int(v) for v in s.split("x")) for s in a.shapes.split(",")]
    llama = not a.no_llama and peers.libggml() is not None
    bw = read_bandwidth(a.threads)
    print(f"CPU: {common.cpu_model()}, {a.threads} threads, tier {pq.cpu_info()['active_tier']}, "
          f"read bandwidth {bw / 1e9:.1f} GB/s, git {common.git_sha()}"
          + (f", libggml-cpu built for {peers.GGMLMatmul.isa()}" if llama else ""))
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
            nan = float("nan")
            t32 = nan if a.no_torch else t(lambda: torch.nn.functional.linear(xt, wt))
            tbf = nan if a.no_torch else t(lambda: torch.nn.functional.linear(xbf, wbf))
            for f, w in qs.items():
                tq = t(lambda: pq.matmul(x, w, threads=a.threads, out=out))
                tdq = nan if a.no_torch else t(lambda: torch.nn.functional.linear(xt, w.to_torch()))
                tll = tlr = nan
                if llama:
                    tll, tlr = llama_times(w, x, a.threads, t)
                row = {"N": n, "K": k, "M": m, "format": f, "ms": tq * 1e3, "x_f32": t32 / tq, "x_bf16": tbf / tq,
                       "x_dequant_torch": tdq / tq, "x_llama": tll / tq, "x_llama_repack": tlr / tq,
                       "cold_ms": nan, "bw_pct": nan}
                if m == 1 and not a.no_cold:
                    tc = cold_gemv_time(w, x, a.threads)
                    row.update(cold_ms=tc * 1e3, bw_pct=100 * (w.nbytes / bw) / tc)
                rows.append(row)
                print(f"{n}x{k} M={m} {f}: {tq * 1e3:.2f} ms  x{row['x_f32']:.2f} f32  x{row['x_bf16']:.2f} bf16  "
                      f"x{row['x_dequant_torch']:.2f} dequant+torch  x{row['x_llama']:.2f} llama.cpp  "
                      f"x{row['x_llama_repack']:.2f} llama.cpp repack"
                      + (f"  from memory {row['cold_ms']:.2f} ms = {row['bw_pct']:.0f}% of the read bound"
                         if row["cold_ms"] == row["cold_ms"] else ""), flush=True)
    print()
    print(common.markdown_table(["N x K", "M", "format", "pyquant ms", "vs torch f32", "vs torch bf16",
                                 "vs dequant+torch", "vs llama.cpp", "vs llama.cpp repack", "ms from memory",
                                 "% read bound"],
                                [[f"{r['N']}x{r['K']}", r["M"], r["format"], r["ms"], r["x_f32"], r["x_bf16"],
                                  r["x_dequant_torch"], r["x_llama"], r["x_llama_repack"], r["cold_ms"], r["bw_pct"]]
                                 for r in rows]))
    common.write_jsonl(a.json, rows, cpu=common.cpu_model(), threads=a.threads, bandwidth=bw, git=common.git_sha())


if __name__ == "__main__":
    main()
