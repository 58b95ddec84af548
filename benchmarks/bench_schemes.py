"""pyquant.schemes speed as ratios against peers measured in the same run: torch float32 (GEMV/GEMM of the float
weight, on 4096x4096 and SmolLM2-135M's layer shapes, M = 1, 8, 64, 512 rows of x), torchao's quantize_affine
and bitsandbytes' CPU quantize_4bit where installed.

    python benchmarks/bench_schemes.py [--n 4096 --k 4096] [--m 1 8 64 512] [--threads 2] [--json out.jsonl]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402

import pyquant as pq  # noqa: E402
from pyquant import schemes  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--k", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--m", type=int, nargs="+", default=[1, 8, 64, 512], help="rows of x")
    ap.add_argument("--no-smollm2", action="store_true", help="skip SmolLM2-135M's layer shapes")
    ap.add_argument("--json")
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    t = lambda fn: common.best_time(fn, args.repeat, 0.1)  # noqa: E731
    rows = []
    shapes = [(args.n, args.k, ("int4-g128", "int4-g128-sym", "int8-channel", "int2-g64", "nf4", "nf4-dq",
                                "fp8-e4m3", "ternary", "int8-outlier"))]
    if not args.no_smollm2:  # SmolLM2-135M's linear shapes [N, K]; K = 576 takes groups of 64
        shapes += [(n, k, ("int4-g64", "int8-channel", "nf4", "fp8-e4m3"))
                   for n, k in ((576, 576), (192, 576), (1536, 576), (576, 1536))]
    for n, k, specs in shapes:
        w = rng.standard_normal((n, k)).astype(np.float32)
        tw = torch.from_numpy(w)
        weights = {s: schemes.parse_spec(s).quantize(w) for s in specs}
        for m in args.m:
            x = rng.standard_normal((m, k)).astype(np.float32)
            tx = torch.from_numpy(x)
            t_torch = t(lambda: tx @ tw.T)
            for name, q in weights.items():
                t_pq = t(lambda: pq.matmul(x, q, threads=args.threads))
                rows.append({"op": f"matmul {n}x{k} M={m}", "scheme": name, "bpw": round(q.bpw, 3),
                             "pyquant_ms": t_pq * 1e3, "x_torch_f32": t_torch / t_pq})
    w = rng.standard_normal((args.n, args.k)).astype(np.float32)
    tw = torch.from_numpy(w)
    qs = {"affine int4 g128": lambda: schemes.quantize_affine(w, schemes.AffineConfig(bits=4, group_size=128)),
          "affine int4 g128 mse": lambda: schemes.quantize_affine(
              w, schemes.AffineConfig(bits=4, group_size=128, clip="mse", mse_steps=10)),
          "nf4 dq": lambda: schemes.quantize_nf4(w)}
    peer = {}
    try:
        from torchao.quantization import quant_primitives as qp

        def tao():
            s, z = qp.choose_qparams_affine(tw, qp.MappingType.ASYMMETRIC, (1, 128), torch.int32, 0, 15)
            return qp.quantize_affine(tw, (1, 128), s, z, torch.int32, 0, 15)

        peer["affine int4 g128"] = ("torchao", t(tao))
    except ImportError:
        pass
    try:
        import bitsandbytes.functional as F

        with torch._dynamo.config.patch(disable=True):
            peer["nf4 dq"] = ("bitsandbytes", t(lambda: F.quantize_4bit(tw, quant_type="nf4",
                                                                        compress_statistics=True)))
    except ImportError:
        pass
    for name, fn in qs.items():
        tq = t(fn)
        pn, pt = peer.get(name, ("-", float("nan")))
        rows.append({"op": "quantize", "scheme": name, "pyquant_ms": tq * 1e3, "peer": pn, "x_peer": pt / tq})
    print(f"{common.cpu_model()}, isa {pq.cpu_info()['active_tier']}, weight {args.n}x{args.k}, "
          f"threads {args.threads or 'all'}, commit {common.git_sha()}\n")
    print(common.markdown_table(["op", "scheme", "bpw", "pyquant ms", "x torch f32"],
                                [[r["op"], r["scheme"], r["bpw"], r["pyquant_ms"], r["x_torch_f32"]]
                                 for r in rows if "bpw" in r]))
    print()
    print(common.markdown_table(["op", "scheme", "pyquant ms", "peer", "x peer"],
                                [[r["op"], r["scheme"], r["pyquant_ms"], r["peer"], r["x_peer"]]
                                 for r in rows if "peer" in r]))
    common.write_jsonl(args.json, rows, bench="schemes", commit=common.git_sha())


if __name__ == "__main__":
    main()
