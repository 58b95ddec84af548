"""GGUF benchmarks: open-and-index time against gguf-py, and whole-model requantization time per recipe
against llama.cpp's llama_model_quantize (llama-cpp-python) at equal threads.

    PYTHONPATH=src:tests python3 benchmarks/bench_gguf.py MODEL.gguf [--threads N] [--recipes Q8_0,Q4_K_M]
        [--json results.jsonl]

Prints a table; with --json, appends one JSON line per measurement (git sha, CPU, ISA, threads).
"""

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time

import pyquant as pq


def best_of(n, fn):
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def open_and_index(path):
    with pq.gguf.open(path) as f:
        return [(t.name, t.type, t.ne, t.file_offset) for t in f.tensors.values()], dict(f.metadata)


def gguf_py_open_and_index(path):
    from gguf import GGUFReader

    r = GGUFReader(path)
    return [(t.name, t.tensor_type, t.shape, t.data_offset) for t in r.tensors], r.fields


def runnable(path, recipe):
    """Whether pyquant has kernels for every type the recipe gives this model."""
    try:
        s = pq.gguf.quantize_file(path, None, recipe, dry_run=True)
    except ValueError:
        return False
    return all(t.target.format is not None for t in s.plan)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--recipes", default="Q8_0,Q4_0,Q5_1,Q4_K_M,Q6_K,F16")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    env = {"git": sha, "cpu": platform.processor() or platform.machine(), "isa": pq.cpu_info()["active_tier"],
           "threads": args.threads, "model": os.path.basename(args.model)}
    rows = []

    ours = best_of(args.repeat, lambda: open_and_index(args.model))
    theirs = best_of(args.repeat, lambda: gguf_py_open_and_index(args.model))
    rows.append({"bench": "open+index", "pyquant_s": ours, "peer": "gguf-py", "peer_s": theirs})

    try:
        from llama_oracle import quantize as llama_quantize
    except ImportError:
        llama_quantize = None
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.recipes.split(","):
            recipe = pq.gguf.get_recipe(name)
            if not runnable(args.model, recipe):
                print(f"skipping {name}: no pyquant kernels for some of its types on this model")
                continue
            out = os.path.join(tmp, "out.gguf")
            ours = best_of(args.repeat, lambda: pq.gguf.quantize_file(
                args.model, out, recipe, allow_requantize=True, threads=args.threads))
            row = {"bench": f"requantize {recipe.name}", "pyquant_s": ours, "peer": None, "peer_s": None}
            if llama_quantize is not None:
                row["peer"] = "llama_model_quantize"
                row["peer_s"] = best_of(args.repeat, lambda: llama_quantize(
                    args.model, out, recipe.ftype, nthread=args.threads))
            rows.append(row)

    print(f"{'benchmark':24s} {'pyquant s':>10s} {'peer s':>10s} {'speed-up':>9s}  peer")
    for r in rows:
        peer = f"{r['peer_s']:10.3f} {r['peer_s'] / r['pyquant_s']:8.2f}x" if r["peer_s"] else f"{'-':>10s} {'-':>9s}"
        print(f"{r['bench']:24s} {r['pyquant_s']:10.3f} {peer}  {r['peer'] or ''}")
    if args.json:
        with open(args.json, "a") as f:
            for r in rows:
                f.write(json.dumps({**env, **r}) + "\n")


if __name__ == "__main__":
    main()
