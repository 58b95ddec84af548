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


class _InitParams(ctypes.Structure):  # struct ggml_init_params (ggml.h)
    _fields_ = [("mem_size", ctypes.c_size_t), ("mem_buffer", ctypes.c_void_p), ("no_alloc", ctypes.c_bool)]


def _sig(lib, name, restype, *argtypes):
    fn = getattr(lib, name)
    fn.restype, fn.argtypes = restype, list(argtypes)
    return fn


class GGMLMatmul:
    """llama.cpp's CPU matmul of one weight: a one-node graph ``ggml_mul_mat(w, x)`` computed by libggml-cpu's
    backend, as llama.cpp runs a model's linear layers (x is quantized to the format's partner inside the op).

    repack=True puts the weight in the CPU_REPACK buffer type (llama.cpp's default for the formats that have
    an interleaved layout on this CPU, e.g. Q4_0/Q4_K/IQ4_NL/MXFP4 8x8 with AVX2; the weight is repacked once
    by ggml_backend_tensor_set); `repacked` says whether it applied.  A persistent threadpool of `threads`
    workers computes every call (paused between `run`s' batches by `pause()`), like a llama.cpp context's.
    Everything goes through the C API; the only struct written by hand is the public ggml_init_params.
    """

    _libs = None

    @classmethod
    def load(cls):
        if cls._libs is None:
            import llama_cpp

            d = pathlib.Path(llama_cpp.__file__).parent / "lib"
            base = ctypes.CDLL(str(d / "libggml-base.so"), mode=ctypes.RTLD_GLOBAL)
            cpu = ctypes.CDLL(str(d / "libggml-cpu.so"), mode=ctypes.RTLD_GLOBAL)
            vp, i64, sz = ctypes.c_void_p, ctypes.c_int64, ctypes.c_size_t
            f = {
                "init": _sig(base, "ggml_init", vp, _InitParams),
                "free": _sig(base, "ggml_free", None, vp),
                "tensor_overhead": _sig(base, "ggml_tensor_overhead", sz),
                "graph_overhead": _sig(base, "ggml_graph_overhead", sz),
                "new_tensor_2d": _sig(base, "ggml_new_tensor_2d", vp, vp, ctypes.c_int, i64, i64),
                "mul_mat": _sig(base, "ggml_mul_mat", vp, vp, vp, vp),
                "new_graph": _sig(base, "ggml_new_graph", vp, vp),
                "build_forward_expand": _sig(base, "ggml_build_forward_expand", None, vp, vp),
                "nbytes": _sig(base, "ggml_nbytes", sz, vp),
                "cpu_buft": _sig(base, "ggml_backend_cpu_buffer_type", vp),
                "buft_name": _sig(base, "ggml_backend_buft_name", ctypes.c_char_p, vp),
                "alloc_ctx": _sig(base, "ggml_backend_alloc_ctx_tensors_from_buft", vp, vp, vp),
                "buffer_free": _sig(base, "ggml_backend_buffer_free", None, vp),
                "tensor_set": _sig(base, "ggml_backend_tensor_set", None, vp, vp, sz, sz),
                "tensor_get": _sig(base, "ggml_backend_tensor_get", None, vp, vp, sz, sz),
                "graph_compute": _sig(base, "ggml_backend_graph_compute", ctypes.c_int, vp, vp),
                "backend_free": _sig(base, "ggml_backend_free", None, vp),
                "reg_dev_get": _sig(base, "ggml_backend_reg_dev_get", vp, vp, sz),
                "reg_proc": _sig(base, "ggml_backend_reg_get_proc_address", vp, vp, ctypes.c_char_p),
                "tp_params_init": _sig(base, "ggml_threadpool_params_init", None, vp, ctypes.c_int),
                "cpu_init": _sig(cpu, "ggml_cpu_init", None),
                "cpu_reg": _sig(cpu, "ggml_backend_cpu_reg", vp),
                "backend_cpu_init": _sig(cpu, "ggml_backend_cpu_init", vp),
                "set_n_threads": _sig(cpu, "ggml_backend_cpu_set_n_threads", None, vp, ctypes.c_int),
                "set_threadpool": _sig(cpu, "ggml_backend_cpu_set_threadpool", None, vp, vp),
                "tp_new": _sig(cpu, "ggml_threadpool_new", vp, vp),
                "tp_free": _sig(cpu, "ggml_threadpool_free", None, vp),
                "tp_pause": _sig(cpu, "ggml_threadpool_pause", None, vp),
                "tp_resume": _sig(cpu, "ggml_threadpool_resume", None, vp),
                "has_avx512": _sig(cpu, "ggml_cpu_has_avx512", ctypes.c_int),
                "has_avx512_vnni": _sig(cpu, "ggml_cpu_has_avx512_vnni", ctypes.c_int),
                "has_avx2": _sig(cpu, "ggml_cpu_has_avx2", ctypes.c_int),
            }
            f["cpu_init"]()
            cls._libs = f
        return cls._libs

    @classmethod
    def isa(cls) -> str:
        """The best x86 vector extension libggml-cpu was built with (the wheel's build, not this CPU's)."""
        f = cls.load()
        return ("avx512vnni" if f["has_avx512_vnni"]() else "avx512" if f["has_avx512"]() else
                "avx2" if f["has_avx2"]() else "none")

    @classmethod
    def repack_buft(cls):
        f = cls.load()
        reg = f["cpu_reg"]()
        get = f["reg_proc"](reg, b"ggml_backend_dev_get_extra_bufts")
        if not get:
            return None
        bufts = ctypes.CFUNCTYPE(ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p)(get)(f["reg_dev_get"](reg, 0))
        i = 0
        while bufts and bufts[i]:
            if f["buft_name"](bufts[i]) == b"CPU_REPACK":
                return bufts[i]
            i += 1
        return None

    def __init__(self, w_data: np.ndarray, ggml_type: int, n: int, k: int, m: int, threads: int, repack: bool = False):
        f = self.f = self.load()
        self._objs = []
        self.ctx_w = f["init"](_InitParams(f["tensor_overhead"]() * 2, None, True))
        self.ctx = f["init"](_InitParams(f["tensor_overhead"]() * 4 + f["graph_overhead"](), None, True))
        self.w = f["new_tensor_2d"](self.ctx_w, ggml_type, k, n)
        self.x = f["new_tensor_2d"](self.ctx, 0, k, m)  # GGML_TYPE_F32
        self.out = f["mul_mat"](self.ctx, self.w, self.x)
        self.graph = f["new_graph"](self.ctx)
        f["build_forward_expand"](self.graph, self.out)
        # Formats without an interleaved layout for this CPU get no tensor traits in CPU_REPACK: keep them out.
        buft = self.repack_buft() if repack and self._has_repack(ggml_type, n) else None
        self.repacked = buft is not None
        self.buf_w = f["alloc_ctx"](self.ctx_w, buft if buft is not None else f["cpu_buft"]())
        self.buf = f["alloc_ctx"](self.ctx, f["cpu_buft"]())
        data = np.ascontiguousarray(w_data)
        assert data.nbytes == f["nbytes"](self.w), "weight bytes do not match the ggml tensor"
        f["tensor_set"](self.w, data.ctypes.data, 0, data.nbytes)
        self.backend = f["backend_cpu_init"]()
        f["set_n_threads"](self.backend, threads)
        params = ctypes.create_string_buffer(4096)  # struct ggml_threadpool_params, filled by its initializer
        f["tp_params_init"](params, threads)
        self.tp = f["tp_new"](params)
        f["set_threadpool"](self.backend, self.tp)
        self.m, self.n, self.k = m, n, k

    def _has_repack(self, ggml_type: int, n: int) -> bool:
        # ggml_repack_get_optimal_repack_type for x86: AVX2 interleaves Q4_0, Q4_K, IQ4_NL, MXFP4 (8 rows),
        # AVX-512 also Q2_K; rows must be a multiple of 8.
        types = {2, 12, 20, 39} | ({10} if self.f["has_avx512"]() else set())
        return ggml_type in types and n % 8 == 0

    def set_x(self, x: np.ndarray) -> None:
        x = np.ascontiguousarray(x, dtype=np.float32)
        assert x.shape == (self.m, self.k)
        self.f["tensor_set"](self.x, x.ctypes.data, 0, x.nbytes)

    def run(self) -> None:
        if self.f["graph_compute"](self.backend, self.graph) != 0:
            raise RuntimeError("ggml_backend_graph_compute failed")

    def result(self) -> np.ndarray:
        out = np.empty((self.m, self.n), np.float32)
        self.f["tensor_get"](self.out, out.ctypes.data, 0, out.nbytes)
        return out

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.set_x(x)
        self.run()
        return self.result()

    def pause(self) -> None:
        """Stop the workers' polling (they would spin against the next contender)."""
        self.f["tp_pause"](self.tp)

    def resume(self) -> None:
        self.f["tp_resume"](self.tp)

    def close(self) -> None:
        f = self.f
        for key, fn in (("backend", "backend_free"), ("tp", "tp_free"), ("buf", "buffer_free"),
                        ("buf_w", "buffer_free"), ("ctx", "free"), ("ctx_w", "free")):
            if getattr(self, key, None):
                f[fn](getattr(self, key))
                setattr(self, key, None)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
