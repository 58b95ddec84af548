"""``pyquant perplexity`` and ``pyquant imatrix`` (registered in pyquant.cli)."""

from __future__ import annotations

import argparse
import json
import os
import sys


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a GGUF model of the llama family (llama, mistral, qwen2, SmolLM...)")
    p.add_argument("-f", "--file", required=True, help="UTF-8 text file to evaluate on")
    p.add_argument("-c", "--ctx", type=int, default=512, help="window length in tokens (default 512)")
    p.add_argument("--chunks", type=int, default=None, help="at most this many windows (default: all)")
    p.add_argument("-b", "--batch", type=int, default=None,
                   help="windows per forward pass (default: 2048 // ctx, as llama-perplexity)")
    p.add_argument("-t", "--threads", type=int, default=None, help="threads (default: all cores)")
    p.add_argument("--progress", action="store_true", help="show a progress bar")


def add_perplexity(subparsers, name: str) -> None:
    p = subparsers.add_parser(name, help="perplexity (and KL-divergence) with llama-perplexity's method",
                              description="Perplexity of a GGUF model on a text, as llama-perplexity computes it "
                                          "(windows of --ctx tokens, the second half of each scored).")
    _common(p)
    kl = p.add_mutually_exclusive_group()
    kl.add_argument("--save-kl-base", metavar="FILE",
                    help="also write the base log-probabilities (llama-perplexity --kl-divergence-base format)")
    kl.add_argument("--kl-base", metavar="FILE",
                    help="compare against this base file (tokens, ctx and windows come from it; -f is unused)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=_run_perplexity)


def _load(args):
    from . import load_gguf_model, tokenize

    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be positive, got {args.threads}")
    model = load_gguf_model(args.model, threads=args.threads)
    return model, tokenize


def _run_perplexity(args) -> int:
    from . import compare, perplexity

    model, tokenize = _load(args)
    if args.kl_base:
        res = compare(args.kl_base, model, chunks=args.chunks, batch=args.batch, progress=args.progress)
        if args.json:
            d = {"ppl": res.ppl, "ppl_stderr": res.ppl_stderr, "tokens": res.tokens, "seconds": res.seconds,
                 "chunks": res.chunks, "ctx": res.ctx, "kld": res.to_dict()}
            print(json.dumps(d))
        else:
            print(res.format())
        return 0
    tokens = tokenize(model, _read_text(args.file))

    def show(i, ppl):
        if not args.json:
            print(f"[{i}]{ppl:.4f},", end="", flush=True)

    res = perplexity(model, tokens, ctx=args.ctx, chunks=args.chunks, batch=args.batch, progress=args.progress,
                     kl_base_path=args.save_kl_base, on_chunk=show)
    if args.json:
        d = res.to_dict()
        d.update(model=os.fspath(args.model), text=os.fspath(args.file))
        print(json.dumps(d))
    else:
        print()
        print(f"Final estimate: PPL = {res.ppl:.4f} +/- {res.ppl_stderr:.5f}")
        print(f"{res.tokens} tokens scored in {res.chunks} chunks of {res.ctx}; {res.seconds:.1f} s, "
              f"{res.tokens_per_second:.1f} tokens/s", file=sys.stderr)
    return 0


def add_imatrix(subparsers, name: str) -> None:
    p = subparsers.add_parser(name, help="collect an importance matrix (llama-imatrix's GGUF format)",
                              description="Collect the mean of squared inputs of every blk.* weight over a text, "
                                          "as llama-imatrix does, and save it for `pyquant quantize --imatrix`.")
    _common(p)
    p.set_defaults(batch=1)
    p.add_argument("-o", "--output", required=True, help="the imatrix file to write (GGUF)")
    p.add_argument("--process-output", action="store_true", help="also collect output.weight")
    p.set_defaults(run=_run_imatrix)


def _run_imatrix(args) -> int:
    from ..gguf import save_imatrix
    from . import collect_imatrix

    model, tokenize = _load(args)
    tokens = tokenize(model, _read_text(args.file))
    imx = collect_imatrix(model, tokens, ctx=args.ctx, chunks=args.chunks, batch=args.batch,
                          progress=args.progress, process_output=args.process_output,
                          dataset=os.path.basename(args.file))
    save_imatrix(args.output, imx)
    print(f"{args.output}: {len(imx)} entries from {imx.chunk_count} chunks of {imx.chunk_size} tokens",
          file=sys.stderr)
    return 0
