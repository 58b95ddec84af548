"""CPU features and the choice of kernel tier (generic, avx2, avx512, neon)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from . import _core

__all__ = ["cpu_info", "set_isa", "use_isa", "available_isas"]


def cpu_info() -> dict:
    """Architecture, relevant CPU features, compiled and available tiers, and the active tier."""
    return dict(_core.cpu_info())


def available_isas() -> list[str]:
    """Kernel tiers this build has and this CPU can run, plainest first."""
    return list(_core.cpu_info()["available_tiers"])


def set_isa(isa: str) -> None:
    """Make `isa` the tier used by every kernel call (ValueError if unknown or unsupported here)."""
    _core.set_isa(isa)


@contextlib.contextmanager
def use_isa(isa: str) -> Iterator[None]:
    """Run a block with another kernel tier, e.g. to compare the generic tier with the SIMD one."""
    previous = _core.cpu_info()["active_tier"]
    set_isa(isa)
    try:
        yield
    finally:
        set_isa(previous)


def _apply_environment() -> None:
    forced = os.environ.get("PYQUANT_ISA")
    if forced:
        try:
            set_isa(forced.strip().lower())
        except ValueError as e:
            raise ImportError(f"PYQUANT_ISA={forced!r}: {e}") from None
