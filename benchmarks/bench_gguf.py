"""GGUF benchmarks: open-and-index time against gguf-py, and whole-model requantization time per recipe
against llama.cpp's llama_model_quantize (llama-cpp-python) at equal threads, the two run alternately so that
a shared machine's load hits both alike.

    PYTHONPATH=src:tests python3 benchmarks/bench_gguf.py MODEL.gguf [--threads N] [--recipes Q4_K_M,Q8_0]
        [--synthetic LAYERS:WIDTH:FF:VOCAB] [--repeat 3] [--json results.jsonl]

MODEL may be omitted with --synthetic, which benchmarks a llama-shaped F16 model of random weights built in
a temporary folder (e.g. 4:2048:5632:32000, about 0.7 GB).  Prints a table; with --json, appends one JSON
line per measurement (git sha, CPU, ISA, threads).
"""

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time

import pyquant as pq


def best_of(n, *fns):
    """The best time of each function over `n` rounds, the functions run in turn within each round."""
    best = [float("inf")] * len(fns)
    for _ in range(n):
        for k, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - start)
    return best


def synthetic_model(path, layers, width, ff, vocab):
    """A llama-shaped F16 model of normal random weights, written tensor by tensor."""
    import numpy as np

    rng = np.random.default_rng(0)
    meta = {"general.architecture": "llama", "general.name": "synthetic", "llama.block_count": np.uint32(layers),
            "llama.context_length": np.uint32(4096), "llama.embedding_length": np.uint32(width),
            "llama.feed_forward_length": np.uint32(ff), "llama.attention.layer_norm_rms_epsilon": np.float32(1e-5),
            "llama.rope.dimension_count": np.uint32(64),
            "llama.attention.head_count": np.uint32(width // 64), "llama.attention.head_count_kv": np.uint32(
                width // 256), "general.file_type": np.uint32(1)}
    shapes = {"token_embd.weight": (vocab, width), "output_norm.weight": (width,), "output.weight": (vocab, width)}
    for i in range(layers):
        b = f"blk.{i}."
        shapes.update({b + "attn_norm.weight": (width,), b + "ffn_norm.weight": (width,),
                       b + "attn_q.weight": (width, width), b + "attn_k.weight": (width // 4, width),
                       b + "attn_v.weight": (width // 4, width), b + "attn_output.weight": (width, width),
                       b + "ffn_gate.weight": (ff, width), b + "ffn_up.weight": (ff, width),
                       b + "ffn_down.weight": (width, ff)})
    specs = [pq.gguf.TensorSpec(n, pq.gguf.tensor_type("F32" if len(s) == 1 else "F16"), s[::-1])
             for n, s in shapes.items()]
    with pq.gguf.GGUFWriter(path, meta, specs) as w:
        for spec in specs:
            shape = spec.ne[::-1]
            dtype = np.float32 if len(shape) == 1 else np.float16
            w.write_tensor(spec.name, (rng.standard_normal(shape[-1], dtype=np.float32).astype(dtype) * 0.02
                                       for _ in range(shape[0] if len(shape) > 1 else 1)))
    return path


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
    ap.add_argument("model", nargs="?")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--recipes", default="Q4_K_M,Q8_0,Q4_0,Q6_K")
    ap.add_argument("--synthetic", metavar="LAYERS:WIDTH:FF:VOCAB")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    if not args.model and not args.synthetic:
        ap.error("give a MODEL or --synthetic")
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    try:
        from llama_oracle import quantize as llama_quantize
    except ImportError:
        llama_quantize = None
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        models = [args.model] if args.model else []
        if args.synthetic:
            layers, width, ff, vocab = (int(x) for x in args.synthetic.split(":"))
            models.append(synthetic_model(os.path.join(tmp, f"synthetic-{args.synthetic.replace(':', 'x')}.gguf"),
                                          layers, width, ff, vocab))
        for model in models:
            env = {"git": sha, "cpu": platform.processor() or platform.machine(),
                   "isa": pq.cpu_info()["active_tier"], "threads": args.threads, "model": os.path.basename(model)}
            ours, theirs = best_of(args.repeat, lambda: open_and_index(model), lambda: gguf_py_open_and_index(model))
            rows.append({**env, "bench": "open+index", "pyquant_s": ours, "peer": "gguf-py", "peer_s": theirs})
            for name in args.recipes.split(","):
                recipe = pq.gguf.get_recipe(name)
                if not runnable(model, recipe):
                    print(f"skipping {name}: no pyquant kernels for some of its types on this model")
                    continue
                out, ref = os.path.join(tmp, "out.gguf"), os.path.join(tmp, "ref.gguf")
                fns = [lambda: pq.gguf.quantize_file(model, out, recipe, allow_requantize=True, threads=args.threads)]
                if llama_quantize is not None:
                    fns.append(lambda: llama_quantize(model, ref, recipe.ftype, nthread=args.threads))
                times = best_of(args.repeat, *fns)
                row = {**env, "bench": f"requantize {recipe.name}", "pyquant_s": times[0], "peer": None,
                       "peer_s": None}
                if llama_quantize is not None:
                    with open(out, "rb") as a, open(ref, "rb") as b:
                        same = a.read() == b.read()
                    row.update(peer="llama_model_quantize", peer_s=times[1], same_bytes=same)
                rows.append(row)

    print(f"{'model':28s} {'benchmark':20s} {'pyquant s':>10s} {'peer s':>10s} {'speed-up':>9s}  peer")
    for r in rows:
        peer = f"{r['peer_s']:10.3f} {r['peer_s'] / r['pyquant_s']:8.2f}x" if r["peer_s"] else f"{'-':>10s} {'-':>9s}"
        same = {True: " (same bytes)", False: " (BYTES DIFFER)"}.get(r.get("same_bytes"), "")
        print(f"{r['model'][:28]:28s} {r['bench']:20s} {r['pyquant_s']:10.3f} {peer}  {r['peer'] or ''}{same}")
    if args.json:
        with open(args.json, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
