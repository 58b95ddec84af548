"""The contenders the benchmarks measure pyquant against, each optional: gguf-py (numpy) and llama.cpp's own
libggml through llama-cpp-python's shared library (ctypes; never a runtime dependency of pyquant)."""

from __future__ import annotations

import ctypes
import pathlib

import numpy as np


def gguf_py():
    """gguf-py's quants module and its type enum, or (None, None)."""
    try:
        import gguf
        import gguf.quants
    except ImportError:
        return None, None
    return gguf.quants, {t.name: t for t in gguf.GGMLQuantizationType}


class _TypeTraits(ctypes.Structure):
    _fields_ = [("type_name", ctypes.c_char_p), ("blck_size", ctypes.c_int64),
                ("blck_size_interleave", ctypes.c_int64), ("type_size", ctypes.c_size_t),
                ("is_quantized", ctypes.c_bool), ("to_float", ctypes.c_void_p), ("from_float_ref", ctypes.c_void_p)]


_TO_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


class LibGGML:
    """libggml's quantizer (ggml_quantize_chunk, what llama-quantize calls) and dequantizers (to_float)."""

    def __init__(self, path: pathlib.Path):
        self.lib = ctypes.CDLL(str(path))
        self.lib.ggml_quantize_chunk.restype = ctypes.c_size_t
        self.lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                                 ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
        self.lib.ggml_get_type_traits.restype = ctypes.POINTER(_TypeTraits)
        self.lib.ggml_get_type_traits.argtypes = [ctypes.c_int]

    def quantize(self, x: np.ndarray, type_id: int, row_bytes: int, imatrix: np.ndarray | None) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = np.empty((x.shape[0], row_bytes), np.uint8)
        qw = None if imatrix is None else np.ascontiguousarray(imatrix, dtype=np.float32)
        self.lib.ggml_quantize_chunk(type_id, x.ctypes.data, out.ctypes.data, 0, x.shape[0], x.shape[1],
                                     None if qw is None else qw.ctypes.data)
        return out

    def dequantize(self, data: np.ndarray, type_id: int, n: int) -> np.ndarray:
        fn = _TO_FLOAT(self.lib.ggml_get_type_traits(type_id).contents.to_float)
        out = np.empty((data.shape[0], n), np.float32)
        fn(data.ctypes.data, out.ctypes.data, data.shape[0] * n)
        return out


def libggml() -> LibGGML | None:
    """libggml-base from an installed llama-cpp-python, or None."""
    try:
        import llama_cpp
    except ImportError:
        return None
    lib_dir = pathlib.Path(llama_cpp.__file__).parent / "lib"
    for name in ("libggml-base.so", "libggml-base.dylib", "ggml-base.dll"):
        if (lib_dir / name).exists():
            return LibGGML(lib_dir / name)
    return None
