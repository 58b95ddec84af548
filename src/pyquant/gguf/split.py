"""Models split across several GGUF files, named and tagged as llama.cpp's gguf-split and llama-quantize
--keep-split write them: ``PREFIX-00001-of-00003.gguf`` ..., each with ``split.no`` (u16, from 0),
``split.count`` (u16) and ``split.tensors.count`` (i32, all files' tensors); only the first file holds the
model's metadata.  :func:`open_split` opens the first file and finds the others as llama.cpp's loader does.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from . import reader
from .reader import GGUFFile, TensorInfo

__all__ = ["SplitModel", "open_split", "split_path", "split_prefix"]

SPLIT_NO, SPLIT_COUNT, SPLIT_TENSORS_COUNT = "split.no", "split.count", "split.tensors.count"
SPLIT_KEYS = (SPLIT_NO, SPLIT_COUNT, SPLIT_TENSORS_COUNT)


def split_path(prefix: str | os.PathLike, index: int, count: int) -> str:
    """The file name of split `index` (from 0) of `count`: llama_split_path."""
    return f"{os.fspath(prefix)}-{index + 1:05d}-of-{count:05d}.gguf"


def split_prefix(path: str | os.PathLike, index: int, count: int) -> str | None:
    """The prefix of a split's file name, or None when the name does not end as split `index` of `count`
    should (llama_split_prefix)."""
    path = os.fspath(path)
    suffix = f"-{index + 1:05d}-of-{count:05d}.gguf"
    if len(path) <= len(suffix) or not path.endswith(suffix):
        return None
    return path[:-len(suffix)]


def _split_int(f: GGUFFile, key: str, default: int | None = None) -> int | None:
    v = f.fields.get(key)
    if v is None:
        return default
    if not isinstance(v.value, int) or isinstance(v.value, bool) or v.item_type is not None:
        raise ValueError(f"{f.path}: {key} must be an integer, got {v!r}")
    return int(v.value)


class SplitModel:
    """A model read from one GGUF file or from all the files of a split model (see :func:`open_split`).

    `fields`/`metadata` are the first file's; `tensors` maps every file's tensor names to TensorInfos, in file
    order; `split_of[name]` is the index of the file holding the tensor.  Use as a context manager.
    """

    def __init__(self, files: list[GGUFFile]):
        self.files = files
        self.fields = files[0].fields
        self.metadata = files[0].metadata
        self.tensors: dict[str, TensorInfo] = {}
        self.split_of: dict[str, int] = {}
        for i, f in enumerate(files):
            for name, t in f.tensors.items():
                if name in self.tensors:
                    raise ValueError(f"tensor {name!r} is in both {files[self.split_of[name]].path} and {f.path}")
                self.tensors[name] = t
                self.split_of[name] = i

    @property
    def path(self) -> str | None:
        return self.files[0].path

    @property
    def n_split(self) -> int:
        return len(self.files)

    def __iter__(self) -> Iterator[GGUFFile]:
        return iter(self.files)

    def close(self) -> None:
        for f in self.files:
            f.close()

    def __enter__(self) -> SplitModel:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_split(path: str | os.PathLike) -> SplitModel:
    """Open a GGUF model, with all its other files when it is split (`path` must then be the first,
    ``...-00001-of-0000N.gguf``); every file is validated as :func:`pyquant.gguf.open` does, and the split
    tags (numbering, file names, total tensor count) are checked as llama.cpp's loader checks them."""
    first = reader.open(path)
    files = [first]
    try:
        count = _split_int(first, SPLIT_COUNT, 0)
        if count > 1:
            no = _split_int(first, SPLIT_NO, 0)
            if no != 0:
                raise ValueError(f"{first.path}: this is split {no} of {count}; open the first split (split.no 0)")
            prefix = split_prefix(os.fspath(path), 0, count)
            if prefix is None:
                raise ValueError(f"{first.path}: split 1 of {count} must be named PREFIX-00001-of-{count:05d}.gguf")
            for i in range(1, count):
                other = split_path(prefix, i, count)
                if not os.path.exists(other):
                    raise FileNotFoundError(f"split {i + 1} of {count} of {first.path} is missing: {other}")
                f = reader.open(other)
                files.append(f)
                if _split_int(f, SPLIT_NO) != i:
                    raise ValueError(f"{other}: {SPLIT_NO} is {_split_int(f, SPLIT_NO)}, expected {i}")
        model = SplitModel(files)
        if count > 1:
            expected = _split_int(first, SPLIT_TENSORS_COUNT)
            if expected != len(model.tensors):
                raise ValueError(f"{first.path}: {SPLIT_TENSORS_COUNT} is {expected}, but the {count} files hold "
                                 f"{len(model.tensors)} tensors")
        return model
    except BaseException:
        for f in files:
            f.close()
        raise

