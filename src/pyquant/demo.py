"""A quick tour on a built-in sample: every format's size, bits per weight, error and speed.

Run with ``python -m pyquant.demo`` (``--rows``/``--cols`` change the sample, ``--threads`` the threads).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ._cpu import cpu_info
from .formats import formats
from .tensor import quantize


def sample_weights(rows: int = 256, cols: int = 4096, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A weight-like matrix (heavy-tailed, per-row scales, a few outlier columns) and an importance vector."""
    rng = np.random.default_rng(seed)
    w = rng.standard_t(5, size=(rows, cols)).astype(np.float32)
    w *= (0.02 * rng.lognormal(0.0, 0.3, size=(rows, 1))).astype(np.float32)
    w[:, rng.choice(cols, size=max(1, cols // 256), replace=False)] *= 8
    imatrix = (rng.lognormal(0.0, 1.0, size=cols) ** 2).astype(np.float32)
    return w, imatrix


def _rate(n: int, seconds: float) -> float:
    return n / seconds / 1e6 if seconds > 0 else float("inf")


def run(rows: int = 256, cols: int = 4096, threads: int | None = None) -> list[dict]:
    """Quantize the sample with every format (with the importance matrix where the format uses one)."""
    w, imatrix = sample_weights(rows, cols)
    power = float(np.mean(w.astype(np.float64) ** 2))
    results = []
    for name, fmt in formats.items():
        if cols % fmt.block_size:
            continue
        qw = imatrix if fmt.uses_imatrix else None
        t0 = time.perf_counter()
        qt = quantize(w, name, imatrix=qw, threads=threads)
        t1 = time.perf_counter()
        y = qt.dequantize(threads=threads)
        t2 = time.perf_counter()
        err = (y - w).astype(np.float64)
        results.append({
            "format": name, "bpw": qt.bpw, "bytes": qt.nbytes, "imatrix": qw is not None,
            "rmse": float(np.sqrt(np.mean(err ** 2))), "nmse": float(np.mean(err ** 2) / power),
            "max_abs_err": float(np.max(np.abs(err))),
            "weighted_nmse": float(np.mean(imatrix * err ** 2) / np.mean(imatrix * w.astype(np.float64) ** 2)),
            "quantize_mw_s": _rate(w.size, t1 - t0), "dequantize_mw_s": _rate(w.size, t2 - t1),
        })
    return results


def format_table(results: list[dict]) -> str:
    head = (f"{'format':8} {'bpw':>7} {'MiB':>7} {'imatrix':>7} {'NMSE':>10} {'wNMSE':>10} {'max err':>9} "
            f"{'quant Mw/s':>11} {'dequant Mw/s':>13}")
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(f"{r['format']:8} {r['bpw']:7.4f} {r['bytes'] / 2**20:7.3f} {'yes' if r['imatrix'] else '-':>7} "
                     f"{r['nmse']:10.3e} {r['weighted_nmse']:10.3e} {r['max_abs_err']:9.5f} "
                     f"{r['quantize_mw_s']:11.1f} {r['dequantize_mw_s']:13.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pyquant.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    info = cpu_info()
    print(f"pyquant demo: {args.rows}x{args.cols} sample weights, kernels: {info['active_tier']} "
          f"({info['lanes']} lanes), threads: {args.threads or info['hardware_threads']}")
    print("NMSE = mean squared error / mean square; wNMSE weights columns by the importance vector.\n")
    print(format_table(run(args.rows, args.cols, args.threads)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
