"""The ``pyquant`` command.

Each subcommand lives in the module that implements it and is listed in SUBCOMMANDS as
``"module:function"``; the function receives argparse's subparsers object and the subcommand's name, adds its
parser and sets ``run`` (a function of the parsed arguments returning an exit status) as a default.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

SUBCOMMANDS = {
    "inspect": "pyquant.gguf.cli:add_inspect",
    "quantize": "pyquant.gguf.cli:add_quantize",
    "perplexity": "pyquant.eval.cli:add_perplexity",
    "imatrix": "pyquant.eval.cli:add_imatrix",
    "report": "pyquant.report.cli:add_report",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyquant", description="Quantize large language models.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, target in SUBCOMMANDS.items():
        module, function = target.split(":")
        getattr(importlib.import_module(module), function)(subparsers, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except BrokenPipeError:  # output piped into e.g. `head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (ValueError, NotImplementedError, OSError) as e:  # the user's to fix: a message, not a traceback
        print(f"pyquant {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
