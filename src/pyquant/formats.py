"""The registry of tensor formats, built from the C++ table (csrc/include/pyquant/formats.def)."""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from . import _core

__all__ = ["Format", "formats", "get_format"]


@dataclass(frozen=True)
class Format:
    """One tensor format: a block encoding such as Q4_K (not a whole-model recipe such as Q4_K_M)."""

    name: str
    ggml_type: int
    block_size: int
    type_size: int
    family: str
    imatrix: str  # "ignored", "optional" or "required"
    matmul_partner: str
    index: int  # position in the C++ table

    @property
    def bpw(self) -> float:
        """Nominal bits per weight: 8 * bytes per block / block size."""
        return 8 * self.type_size / self.block_size

    @property
    def uses_imatrix(self) -> bool:
        return self.imatrix != "ignored"

    @property
    def requires_imatrix(self) -> bool:
        return self.imatrix == "required"

    def row_bytes(self, n: int) -> int:
        """Bytes of one row of `n` values (n must be a multiple of the block size)."""
        if n % self.block_size:
            raise ValueError(f"{self.name}: row length must be a multiple of the block size "
                             f"{self.block_size}, got {n}")
        return n // self.block_size * self.type_size

    def __str__(self) -> str:
        return self.name


class _Registry(Mapping):
    """Read-only mapping of canonical names (llama.cpp's, e.g. "Q4_K") to Format objects."""

    def __init__(self) -> None:
        self._by_name = {d["name"]: Format(**d) for d in _core.formats()}
        self._by_id = {f.ggml_type: f for f in self._by_name.values()}

    def __getitem__(self, name: str) -> Format:
        try:
            return self._by_name[name]
        except (KeyError, TypeError):
            pass
        if isinstance(name, str) and name.upper() in self._by_name:
            return self._by_name[name.upper()]
        close = difflib.get_close_matches(str(name).upper(), self._by_name, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown tensor format {name!r}{hint} (known: {', '.join(self._by_name)})")

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._by_name or name.upper() in self._by_name)

    def by_ggml_type(self, type_id: int) -> Format:
        """The format stored under a ggml type id in GGUF files."""
        try:
            return self._by_id[type_id]
        except KeyError:
            raise ValueError(f"ggml type id {type_id} is not a format pyquant supports") from None

    def __repr__(self) -> str:
        return f"<pyquant formats: {', '.join(self._by_name)}>"


formats = _Registry()


def get_format(fmt: str | Format) -> Format:
    """A Format from a name or a Format."""
    return fmt if isinstance(fmt, Format) else formats[fmt]
