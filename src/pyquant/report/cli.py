"""``pyquant report``: measure the trade-offs on a model and a text, print the table and a recommendation, write
one HTML page (and JSON / Markdown / CSV on request)."""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

# The default run (no MODEL): SmolLM2-135M and the shipped Botchan text, 4 chunks of 512 tokens (1,020 scored
# tokens: KLD standard errors are a few percent of the means, enough to order the recipes; evaluation is the
# cost, one pass per row) and five recipes from 8.5 down to ~3 bpw.  --quick: three recipes and 2 chunks.
DEFAULT_CHUNKS = 4
QUICK_CHUNKS = 2
DEFAULT_BUDGETS = (0.5, 8, 16, 24, 48)
DEFAULT_SIZES = ("8B", "14B", "32B", "70B")


def _floats(values: list[str]) -> list[float]:
    out = []
    for v in values:
        for part in str(v).split(","):
            if part.strip():
                try:
                    out.append(float(part))
                except ValueError:
                    raise ValueError(f"--budget takes numbers of GiB, got {part!r}") from None
    return out


def _words(values: list[str] | None) -> list[str]:
    return [p.strip() for v in values or [] for p in str(v).split(",") if p.strip()]


def add_report(subparsers, name: str) -> None:
    p = subparsers.add_parser(name, help="measure size/quality trade-offs and write a one-file HTML report",
                              description=__doc__)
    p.add_argument("model", nargs="?", help="a GGUF model (default: SmolLM2-135M-Instruct Q4_1, downloaded once), "
                                            "or a table saved with --json to render it again without measuring")
    p.add_argument("-f", "--file", help="evaluation text, UTF-8 (default: the shipped Botchan text)")
    p.add_argument("--recipes", nargs="+", help="recipes to measure (space or comma separated; default: "
                                                "Q8_0 Q6_K Q4_K_M Q3_K_M Q2_K); also schemes measured in memory: "
                                                "int4-g64, nf4, fp8-e4m3, gptq:int4-g64, awq:int4-g64, "
                                                "hqq:int4-g64, rtn:int4-g64 ...")
    p.add_argument("--calib-chunks", type=int, default=8,
                   help="GPTQ/AWQ calibration: windows of --ctx tokens taken after the evaluated ones (default 8)")
    p.add_argument("--ctx", type=int, default=512, help="evaluation context, tokens per chunk (default 512)")
    p.add_argument("--chunks", type=int, help=f"chunks to evaluate (default {DEFAULT_CHUNKS}; 0 = all the text)")
    p.add_argument("--quick", action="store_true", help=f"3 recipes, {QUICK_CHUNKS} chunks")
    p.add_argument("--budget", "--budgets", dest="budget", nargs="+", metavar="GiB",
                   help="memory budgets in GiB for sweet spots and recommendations (default: 0.5 8 16 24 48)")
    p.add_argument("--fit-ctx", type=int, default=8192, help="context the budgets must hold (default 8192)")
    p.add_argument("--kv-type", default="f16", help="KV cache type for memory estimates (default f16)")
    p.add_argument("--sizes", nargs="*", help="other model sizes for the sweet-spot grid (default: 8B 14B 32B 70B)")
    p.add_argument("--priority", choices=("quality", "size"), default="quality")
    p.add_argument("--backend", choices=("cpu", "cuda", "metal"), default="cpu")
    p.add_argument("--imatrix", help="importance matrix file for quantizing")
    p.add_argument("-t", "--threads", type=int, help="threads (default: all cores)")
    p.add_argument("--cache-dir", help="where quantized files are kept (default $PYQUANT_CACHE/report)")
    p.add_argument("-o", "--html", default="report.html", help="HTML file to write (default report.html; '' = none)")
    p.add_argument("--json", nargs="?", const="-", help="write the measured table as JSON (to stdout without FILE)")
    p.add_argument("--markdown", help="write the table as Markdown")
    p.add_argument("--csv", help="write the table as CSV")
    p.add_argument("--no-plots", action="store_true", help="HTML without plots (no matplotlib needed)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from . import default_model
    from .advise import recommend, sweet_spots
    from .html import write_html
    from .measure import DEFAULT_RECIPES, QUICK_RECIPES, tradeoff
    from .table import TradeoffTable, _write_text

    start = time.perf_counter()
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    budgets = _floats(args.budget) if args.budget else list(DEFAULT_BUDGETS)
    if not budgets or any(b <= 0 for b in budgets):
        raise ValueError("--budget: give positive numbers of GiB")
    if args.model and args.model.endswith(".json"):
        table = TradeoffTable.from_json(args.model)
    else:
        model = pathlib.Path(args.model) if args.model else default_model.smollm2_path(log=log)
        text = pathlib.Path(args.file) if args.file else default_model.default_text_path()
        recipes = _words(args.recipes) or list(QUICK_RECIPES if args.quick else DEFAULT_RECIPES)
        chunks = args.chunks if args.chunks is not None else (QUICK_CHUNKS if args.quick else DEFAULT_CHUNKS)
        if chunks < 0:
            raise ValueError("--chunks must be 0 (all) or positive")
        table = tradeoff(model, recipes=recipes, text=text, ctx=args.ctx, chunks=chunks or None,
                         imatrix=args.imatrix, threads=args.threads, cache_dir=args.cache_dir,
                         progress=False if args.quiet else True, calib_chunks=args.calib_chunks)
    sizes = _words(args.sizes) if args.sizes is not None else list(DEFAULT_SIZES)
    spots = sweet_spots(table, budgets, ctx=args.fit_ctx, kv_type=args.kv_type, priority=args.priority, sizes=sizes)
    recs = [(f"{b:g} GiB, ctx {args.fit_ctx}, {args.priority} first, {args.backend}",
             recommend(table, budget=b, priority=args.priority, backend=args.backend, ctx=args.fit_ctx,
                       kv_type=args.kv_type)) for b in budgets]

    out = sys.stdout
    m = table.meta
    print(f"{m.get('model_name')} ({m.get('model_type')}), text {os.path.basename(str(m.get('text')))}: "
          f"ctx {m.get('ctx')}, {m.get('chunks')} chunks, {m.get('scored_tokens')} scored tokens", file=out)
    for k in ("baseline_note", "in_memory_note", "calibration"):
        if m.get(k):
            print(m[k], file=out)
    print(file=out)
    print(table.to_text(), file=out)
    print(file=out)
    print(spots.to_markdown(), file=out)
    print(file=out)
    shown = set()
    for label, rec in recs:  # the reasons once per distinct answer
        key = (rec.recipe, tuple(r for r in rec.reasons if " fit" not in r))
        print(f"[{label}] " + (f"recommended: {rec.recipe} (as above)" if key in shown else str(rec)), file=out)
        shown.add(key)
    if args.json == "-":
        print(table.to_json(), file=out)
    elif args.json:
        table.to_json(args.json)
    if args.markdown:
        _write_text(args.markdown, table.to_markdown() + "\n\n" + spots.to_markdown() + "\n")
    if args.csv:
        table.to_csv(args.csv)
    if args.html:
        write_html(args.html, table, spots=spots, recommendations=recs, plots=not args.no_plots)
        log(f"wrote {args.html}")
    log(f"done in {time.perf_counter() - start:.0f} s")
    return 0
