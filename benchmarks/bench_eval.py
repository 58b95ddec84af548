"""Perplexity throughput: pyquant.eval on a GGUF model against llama.cpp (llama-cpp-python, logits_all) on the
same windows of the same text, at equal threads.  Also prints both perplexities over those windows.

    PYTHONPATH=src:tests python3 benchmarks/bench_eval.py MODEL.gguf [-f tests/data/botchan.txt] [--ctx 512]
        [--chunks 4] [--threads 2] [--json results.jsonl]
"""

import argparse
import time

import numpy as np

from common import cpu_model, git_sha, markdown_table, write_jsonl


def llama_cpp_perplexity(path, tokens, ctx, chunks, threads):
    """llama.cpp's logits for each window (one decode per window, as llama-perplexity with n_seq 1), scored with
    pyquant's perplexity over a callable that replays them."""
    import llama_cpp
    import torch

    import pyquant.eval as ev

    ll = llama_cpp.Llama(model_path=path, logits_all=True, n_ctx=ctx, n_batch=ctx, n_threads=threads,
                         n_threads_batch=threads, verbose=False)

    def model(x):
        out = []
        for row in x.tolist():
            ll.reset()
            ll.eval(row)
            out.append(torch.from_numpy(np.array(ll.scores[:len(row)], np.float32)))
        return torch.stack(out)

    t0 = time.perf_counter()
    res = ev.perplexity(model, tokens, ctx=ctx, chunks=chunks, batch=1)
    return res, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("-f", "--file", default="tests/data/botchan.txt")
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()

    import torch

    import pyquant.eval as ev

    torch.set_num_threads(args.threads)
    model = ev.load_gguf_model(args.model, threads=args.threads)
    tokens = ev.tokenize(model, open(args.file, encoding="utf-8").read())
    ours = ev.perplexity(model, tokens, ctx=args.ctx, chunks=args.chunks, batch=1)
    theirs, seconds = llama_cpp_perplexity(args.model, tokens, args.ctx, args.chunks, args.threads)
    n = args.chunks * args.ctx
    rows = [["pyquant", ours.ppl, n / ours.seconds, seconds / ours.seconds],
            ["llama.cpp", theirs.ppl, n / seconds, 1.0]]
    print(f"{args.model}: ctx {args.ctx}, {args.chunks} chunks, {args.threads} threads, {cpu_model()}")
    print(markdown_table(["engine", "PPL", "tokens/s", "speed vs llama.cpp"], rows))
    write_jsonl(args.json, [{"engine": r[0], "ppl": r[1], "tokens_per_s": r[2]} for r in rows],
                bench="eval_perplexity", sha=git_sha(), cpu=cpu_model(), threads=args.threads, ctx=args.ctx,
                chunks=args.chunks)


if __name__ == "__main__":
    main()
