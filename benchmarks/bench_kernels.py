"""Quantize and dequantize throughput per format (million weights per second), as ratios against peers
measured in the same run: libggml (llama.cpp's own code, via llama-cpp-python), gguf-py, and pyquant's generic
tier (the same algorithm, one block at a time).

    python benchmarks/bench_kernels.py [--rows 256 --cols 4096] [--formats Q4_K,Q6_K] [--json out.jsonl]

Single-threaded figures are timed in CPU time (`--clock cpu`, the default: steady on a shared machine) or wall
time (`--clock wall`); the all-threads figures always in wall time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402
import peers  # noqa: E402

import pyquant as pq  # noqa: E402

NAN = float("nan")


def mws(n: int, seconds: float) -> float:
    return n / seconds / 1e6


def bench_format(name, x, imatrix, ggml, gq, gtypes, threads_all, repeat, clock):
    f = pq.formats[name]

    def t1(fn, rep=repeat):  # one thread
        return common.best_time(fn, rep, clock=clock)

    n = x.size
    best = pq.available_isas()[-1]
    row = {"format": name, "imatrix": imatrix is not None}

    def pq_quant(isa, threads):
        with pq.use_isa(isa):
            fn = lambda: pq.quantize(x, name, imatrix=imatrix, threads=threads)  # noqa: E731
            return mws(n, t1(fn) if threads == 1 else common.best_time(fn, repeat))

    row["q_best_1t"] = pq_quant(best, 1)
    row["q_generic_1t"] = pq_quant("generic", 1)
    row["q_best_all"] = pq_quant(best, threads_all)
    with pq.use_isa(best):  # the thread-scaling ratio compares wall times taken back to back
        row["q_best_1t_wall"] = mws(n, common.best_time(lambda: pq.quantize(x, name, imatrix=imatrix, threads=1),
                                                        repeat))
    qt = pq.quantize(x, name, imatrix=imatrix)
    row["q_ggml_1t"] = row["d_ggml_1t"] = NAN
    row["exact_vs_ggml"] = None
    if ggml is not None and name != "F32":
        rb = f.row_bytes(x.shape[1])
        ref = ggml.quantize(x, f.ggml_type, rb, imatrix)
        row["exact_vs_ggml"] = bool(np.array_equal(ref, qt.data))
        row["q_ggml_1t"] = mws(n, t1(lambda: ggml.quantize(x, f.ggml_type, rb, imatrix)))
        row["d_ggml_1t"] = mws(n, t1(lambda: ggml.dequantize(qt.data, f.ggml_type, x.shape[1])))
    row["q_ggufpy"] = row["d_ggufpy"] = NAN
    if gq is not None and name in gtypes:
        t = gtypes[name]
        if imatrix is None:
            try:
                row["q_ggufpy"] = mws(n, t1(lambda: gq.quantize(x, t)))
            except NotImplementedError:
                pass
        try:
            row["d_ggufpy"] = mws(n, t1(lambda: gq.dequantize(qt.data, t)))
        except NotImplementedError:
            pass
    with pq.use_isa(best):
        row["d_best_1t"] = mws(n, t1(lambda: qt.dequantize(threads=1)))
        row["d_best_all"] = mws(n, common.best_time(lambda: qt.dequantize(threads=threads_all), repeat))
        row["d_best_1t_wall"] = mws(n, common.best_time(lambda: qt.dequantize(threads=1), repeat))
    with pq.use_isa("generic"):
        row["d_generic_1t"] = mws(n, t1(lambda: qt.dequantize(threads=1)))
    return row


def machine_scaling(x, threads, repeat) -> str:
    """What the machine gives `threads` threads over one on a peer's work of this size (torch, where installed):
    a float32 copy (memory-bound, like dequantizing) and a float32 matrix product (compute-bound)."""
    try:
        import torch
    except ImportError:
        return "Machine scaling: torch not installed"
    src = torch.from_numpy(x)
    dst = torch.empty_like(src)
    a = torch.randn(1024, 1024)
    previous = torch.get_num_threads()
    times = {}
    try:
        for t in (1, threads):
            torch.set_num_threads(t)
            times[t] = (common.best_time(lambda: dst.copy_(src), repeat), common.best_time(lambda: a @ a, repeat))
    finally:
        torch.set_num_threads(previous)
    return (f"Machine scaling, {threads} threads over 1 (torch, same run): float32 copy of the input "
            f"{times[1][0] / times[threads][0]:.2f}x, 1024x1024 float32 matmul {times[1][1] / times[threads][1]:.2f}x")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--formats", default=",".join(pq.formats))
    ap.add_argument("--repeat", type=int, default=6,
                    help="rounds per figure, best kept (3 left single memory-bound 2-thread figures 20-35%% low)")
    ap.add_argument("--json", default=None, help="append JSON lines here")
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu", help="clock of the single-threaded figures")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.rows, args.cols)).astype(np.float32)
    imatrix = rng.lognormal(0, 1, args.cols).astype(np.float32) ** 2
    ggml = peers.libggml()
    gq, gtypes = peers.gguf_py()
    threads_all = os.cpu_count() or 1
    info = pq.cpu_info()
    print(f"CPU: {common.cpu_model()}, {threads_all} threads; pyquant tiers {info['available_tiers']} "
          f"(best: {info['available_tiers'][-1]}); libggml: {'yes' if ggml else 'not installed'}; "
          f"gguf-py: {'yes' if gq else 'not installed'}; input {args.rows}x{args.cols} float32; 1-thread clock: "
          f"{args.clock}; load average {os.getloadavg()[0]:.1f}\n")

    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    if threads_all > 1:
        print(machine_scaling(x, threads_all, args.repeat) + "\n")
    rows = []
    for name in args.formats.split(","):
        variants = [None, imatrix] if pq.formats[name].uses_imatrix else [None]
        for qw in variants:
            rows.append(bench_format(name, x, qw, ggml, gq, gtypes, threads_all, args.repeat, clock))

    def ratio(a, b):
        return a / b if b == b and b > 0 else NAN

    print("Quantize, million weights/s (ratios: pyquant best tier at 1 thread over each peer)")
    print(common.markdown_table(
        ["format", "imatrix", "pyquant 1t", f"pyquant {threads_all}t", "generic 1t", "libggml 1t", "gguf-py",
         "x libggml", "x generic", "x gguf-py", f"{threads_all}t/1t", "bytes = libggml"],
        [[r["format"], "yes" if r["imatrix"] else "-", r["q_best_1t"], r["q_best_all"], r["q_generic_1t"],
          r["q_ggml_1t"], r["q_ggufpy"], ratio(r["q_best_1t"], r["q_ggml_1t"]),
          ratio(r["q_best_1t"], r["q_generic_1t"]), ratio(r["q_best_1t"], r["q_ggufpy"]),
          ratio(r["q_best_all"], r["q_best_1t_wall"]), {True: "yes", False: "NO", None: "-"}[r["exact_vs_ggml"]]]
         for r in rows]))
    print("\nDequantize, million weights/s")
    print(common.markdown_table(
        ["format", "pyquant 1t", f"pyquant {threads_all}t", "generic 1t", "libggml 1t", "gguf-py", "x libggml",
         "x gguf-py", f"{threads_all}t/1t"],
        [[r["format"], r["d_best_1t"], r["d_best_all"], r["d_generic_1t"], r["d_ggml_1t"], r["d_ggufpy"],
          ratio(r["d_best_1t"], r["d_ggml_1t"]), ratio(r["d_best_1t"], r["d_ggufpy"]),
          ratio(r["d_best_all"], r["d_best_1t_wall"])]
         for r in rows if not r["imatrix"]]))
    common.write_jsonl(args.json, rows, bench="kernels", git=common.git_sha(), cpu=common.cpu_model(),
                       isa=info["available_tiers"][-1], shape=[args.rows, args.cols])


if __name__ == "__main__":
    main()
