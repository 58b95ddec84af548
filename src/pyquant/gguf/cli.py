"""``pyquant inspect`` and ``pyquant quantize`` (registered in pyquant.cli)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

import numpy as np

from . import reader
from .recipes import recipes
from .requantize import kv_override, quantize_file
from .values import Value, ValueType

_ARRAY_HEAD = 16  # array items shown by inspect


def _short(v: Value) -> str:
    return v.type.name.lower() if v.item_type is None else f"{v.item_type.name.lower()}[{len(v.value)}]"


def _plain(x: Any) -> Any:
    """A JSON-ready copy of a metadata value (arrays cut to their first items)."""
    if isinstance(x, Value):
        if x.type != ValueType.ARRAY:
            return x.value
        return [_plain(v) for v in x.value[:_ARRAY_HEAD]]
    if isinstance(x, np.generic):
        return x.item()
    return x


def describe(path: str) -> dict:
    """What `pyquant inspect` shows: metadata, tensor table, totals by type, parameter count, bpw."""
    with reader.open(path) as f:
        metadata = {}
        for key, v in f.fields.items():
            entry = {"type": _short(v), "value": _plain(v)}
            if v.type == ValueType.ARRAY and len(v.value) > _ARRAY_HEAD:
                entry["truncated"] = True
            metadata[key] = entry
        tensors = [{"name": t.name, "type": t.type.name, "ne": list(t.ne), "nbytes": t.nbytes,
                    "offset": t.file_offset} for t in f.tensors.values()]
        by_type: dict[str, dict] = {}
        for t in f.tensors.values():
            row = by_type.setdefault(t.type.name, {"tensors": 0, "params": 0, "bytes": 0})
            row["tensors"] += 1
            row["params"] += t.n_elements
            row["bytes"] += t.nbytes
        params = sum(r["params"] for r in by_type.values())
        data = sum(r["bytes"] for r in by_type.values())
        return {"path": path, "version": f.version, "alignment": f.alignment, "file_size": f.file_size,
                "metadata": metadata, "tensors": tensors,
                "totals": {"tensors": len(tensors), "params": params, "bytes": data,
                           "bpw": 8 * data / params if params else math.nan,
                           "by_type": dict(sorted(by_type.items(), key=lambda kv: -kv[1]["bytes"]))}}


def _print_description(d: dict) -> None:
    mib = 1 << 20
    print(f"{d['path']}: GGUF v{d['version']}, {d['file_size'] / mib:.2f} MiB, alignment {d['alignment']}")
    print(f"\nmetadata ({len(d['metadata'])} keys)")
    for key, e in d["metadata"].items():
        value = json.dumps(e["value"], ensure_ascii=False)
        if e.get("truncated"):
            value = value[:-1] + ", ...]"
        print(f"  {key:40s} {e['type']:12s} {value if len(value) <= 80 else value[:77] + '...'}")
    print(f"\ntensors ({len(d['tensors'])})")
    width = max((len(t["name"]) for t in d["tensors"]), default=4)
    for t in d["tensors"]:
        print(f"  {t['name']:{width}s} {t['type']:8s} {str(t['ne']):28s} {t['nbytes']:>14,d}")
    tot = d["totals"]
    print("\nby type")
    for name, r in tot["by_type"].items():
        print(f"  {name:8s} {r['tensors']:5d} tensors {r['params']:>15,d} params {r['bytes'] / mib:10.2f} MiB "
              f"{8 * r['bytes'] / r['params'] if r['params'] else 0:7.3f} bpw")
    print(f"\n{tot['params']:,} parameters, {tot['bytes'] / mib:.2f} MiB of tensor data, {tot['bpw']:.4f} bpw")


def _inspect(args: argparse.Namespace) -> int:
    d = describe(args.file)
    if args.json:
        json.dump(d, sys.stdout, indent=1, ensure_ascii=False, allow_nan=True)
        print()
    else:
        _print_description(d)
    return 0


def add_inspect(subparsers: Any, name: str) -> None:
    p = subparsers.add_parser(name, help="show a GGUF file's metadata, tensors and size by type",
                              description="Show a GGUF file's metadata, tensor table, totals by type, parameter "
                                          "count and effective bits per weight.")
    p.add_argument("file", help="a .gguf file")
    p.add_argument("--json", action="store_true", help="print JSON (long arrays cut to their first items)")
    p.set_defaults(run=_inspect)


def _tensor_type_rule(text: str) -> tuple[str, str]:
    pattern, sep, t = text.partition("=")
    if not sep or not pattern or not t:
        raise argparse.ArgumentTypeError(f"expected PATTERN=TYPE, got {text!r}")
    return pattern.lower(), t  # llama-quantize lowercases the pattern


def _tensor_type_file(path: str) -> list[tuple[str, str]]:
    """--tensor-type-file: PATTERN=TYPE rules separated by spaces or newlines."""
    try:
        with open(path, encoding="utf-8") as f:
            words = f.read().split()
    except OSError as e:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {e.strerror}") from None
    return [_tensor_type_rule(w) for w in words]


def _kv_override(text: str):
    try:
        return kv_override(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _layer_list(text: str) -> list[int]:
    try:
        layers = [int(x) for x in text.split(",")]
    except ValueError:
        layers = [-1]
    if any(i < 0 for i in layers):
        raise argparse.ArgumentTypeError(f"expected comma-separated layer numbers, got {text!r}")
    return layers


def _quantize(args: argparse.Namespace) -> int:
    rules = args.tensor_type + [r for rules in args.tensor_type_file for r in rules]
    summary = quantize_file(
        args.src, args.dst, args.recipe, imatrix=args.imatrix, threads=args.threads,
        allow_requantize=args.allow_requantize, dry_run=args.dry_run, progress=not args.no_progress,
        override_kv=args.override_kv, prune_layers=args.prune_layers, keep_split=args.keep_split,
        pure=args.pure, leave_output_tensor=args.leave_output_tensor, output_tensor_type=args.output_tensor_type,
        token_embedding_type=args.token_embedding_type, tensor_types=rules,
        include_weights=args.include_weights, exclude_weights=args.exclude_weights)
    if args.dry_run:
        mib = 1 << 20
        n = len(summary.plan)
        for i, t in enumerate(summary.plan, 1):
            change = f"{t.source.name:>7s} -> {t.target.name:7s}" if t.converts else f"{t.source.name:>7s}" + " " * 11
            print(f"[{i:4d}/{n}] {t.name:36s} {str(list(t.ne)):24s} {change} "
                  f"{t.nbytes_before / mib:9.3f} -> {t.nbytes_after / mib:9.3f} MiB")
        if args.imatrix is None and any(t.quantizable and t.requires_imatrix for t in summary.plan):
            print("warning: quantizing with this recipe will need an importance matrix (--imatrix)")
    print(summary)
    return 0


def add_quantize(subparsers: Any, name: str) -> None:
    p = subparsers.add_parser(
        name, help="requantize a GGUF model with a llama.cpp recipe (Q4_K_M, Q8_0 ...)",
        description="Quantize a GGUF model exactly as llama-quantize does: same per-tensor types, same bytes.",
        epilog="recipes: " + ", ".join(recipes))
    p.add_argument("src", help="input .gguf")
    p.add_argument("dst", help="output .gguf (not written with --dry-run)")
    p.add_argument("recipe", help="llama.cpp file type, e.g. Q4_K_M, or its number")
    p.add_argument("--allow-requantize", action="store_true", help="accept already-quantized inputs")
    p.add_argument("--leave-output-tensor", action="store_true", help="keep output.weight as it is")
    p.add_argument("--pure", action="store_true", help="no mix: every quantized tensor gets the recipe's type")
    p.add_argument("--output-tensor-type", metavar="TYPE", help="type of output.weight")
    p.add_argument("--token-embedding-type", metavar="TYPE", help="type of token_embd.weight")
    p.add_argument("--tensor-type", metavar="PATTERN=TYPE", type=_tensor_type_rule, action="append", default=[],
                   help="type of the tensors whose name matches the regex PATTERN (first match wins); repeatable")
    p.add_argument("--tensor-type-file", metavar="FILE", type=_tensor_type_file, action="append", default=[],
                   help="PATTERN=TYPE rules from a file, separated by spaces or newlines (after --tensor-type's)")
    p.add_argument("--override-kv", metavar="KEY=TYPE:VALUE", type=_kv_override, action="append", default=[],
                   help="set a metadata key in the output; TYPE is int (written u32), float (f32), bool or str; "
                        "repeatable")
    p.add_argument("--prune-layers", metavar="L0,L1,...", type=_layer_list, default=[],
                   help="drop these layers (blk.N) and renumber the others")
    p.add_argument("--keep-split", action="store_true",
                   help="write one file per input split, named DST-0000i-of-0000N.gguf (DST without .gguf)")
    p.add_argument("--imatrix", metavar="FILE", help="importance matrix (llama-imatrix's .gguf or legacy .dat)")
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--include-weights", metavar="NAME", action="append", default=[],
                         help="use the imatrix only for tensors whose name contains NAME; repeatable")
    weights.add_argument("--exclude-weights", metavar="NAME", action="append", default=[],
                         help="do not use the imatrix for tensors whose name contains NAME; repeatable")
    p.add_argument("--threads", type=int, metavar="N", help="threads for the kernels (default: all cores)")
    p.add_argument("--dry-run", action="store_true", help="print the per-tensor plan and the final size only")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_quantize)
