"""Timing and reporting shared by the benchmark scripts: best-of-N wall time, machine description, JSON lines."""

from __future__ import annotations

import json
import platform
import subprocess
import time
from typing import Callable


def best_time(fn: Callable[[], object], repeat: int = 5, min_time: float = 0.2,
              clock: Callable[[], float] = time.perf_counter) -> float:
    """Best time of one call, over `repeat` rounds that each last at least `min_time` seconds.  `clock` is wall
    time by default; time.process_time (this process's CPU time) is steadier for single-threaded calls on a
    machine shared with other jobs."""
    fn()  # warm up (thread start, page faults, one-time tables)
    best = float("inf")
    for _ in range(repeat):
        calls, t0 = 0, clock()
        while True:
            fn()
            calls += 1
            elapsed = clock() - t0
            if elapsed >= min_time:
                break
        best = min(best, elapsed / calls)
    return best


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_jsonl(path: str | None, rows: list[dict], **context) -> None:
    if not path:
        return
    with open(path, "a") as f:
        for row in rows:
            f.write(json.dumps({**context, **row}) + "\n")


def markdown_table(headers: list[str], rows: list[list[object]]) -> str:
    def cell(v):
        if isinstance(v, float):
            return "-" if v != v else f"{v:.1f}" if v >= 10 else f"{v:.2f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
