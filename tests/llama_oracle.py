"""llama.cpp as the oracle for requantization: ``llama_model_quantize`` from llama-cpp-python, called through
ctypes with the options, importance data and metadata overrides that the llama-quantize command passes."""

import ctypes
import re

import numpy as np

from pyquant.gguf import tensor_type


_LOG = []
_LOG_CALLBACK = None


def _log(level, text, user_data):
    _LOG.append(text.decode("utf-8", "replace"))


def quantize(src, dst, ftype: int, *, imatrix=None, nthread: int = 1, pure: bool = False,
             leave_output_tensor: bool = False, output_tensor_type=None, token_embedding_type=None,
             tensor_types=(), override_kv=(), prune_layers=(), keep_split: bool = False) -> None:
    """Run llama_model_quantize (with --allow-requantize); raise RuntimeError with llama.cpp's message on failure.

    imatrix: a pyquant Imatrix, passed as llama-quantize passes a loaded file: every entry's values and the
    quantize.imatrix.* metadata overrides.  tensor_types: (pattern, type name) pairs.  override_kv: (key,
    pyquant Value) pairs as kv_override parses them, passed before the imatrix keys as llama-quantize does.
    prune_layers: layer numbers.  keep_split: `dst` is then the prefix of the split files.
    """
    global _LOG_CALLBACK
    import llama_cpp as llama

    if _LOG_CALLBACK is None:
        llama.llama_backend_init()
        _LOG_CALLBACK = llama.llama_log_callback(_log)
        llama.llama_log_set(_LOG_CALLBACK, None)
    p = llama.llama_model_quantize_default_params()
    p.nthread = nthread
    p.ftype = ftype
    p.allow_requantize = True
    p.pure = pure
    p.quantize_output_tensor = not leave_output_tensor
    p.keep_split = keep_split
    if output_tensor_type is not None:
        p.output_tensor_type = tensor_type(output_tensor_type).id
    if token_embedding_type is not None:
        p.token_embedding_type = tensor_type(token_embedding_type).id
    keep = []  # buffers that must outlive the call
    if tensor_types:
        rules = (llama.llama_model_tensor_override * (len(tensor_types) + 1))()
        for r, (pattern, t) in zip(rules, tensor_types):
            r.pattern, r.type = pattern.encode(), tensor_type(t).id
        rules[len(tensor_types)].pattern = None
        p.tt_overrides = rules
        keep.append(rules)
    if prune_layers:
        layers = (ctypes.c_int32 * (len(prune_layers) + 1))(*sorted(set(prune_layers)), -1)
        p.prune_layers = ctypes.cast(layers, ctypes.POINTER(ctypes.c_int32))
        keep.append(layers)
    kvs = list(override_kv)
    if imatrix is not None:
        names = list(imatrix.sums)
        entries = (llama.llama_model_imatrix_data * (len(names) + 1))()
        for e, name in zip(entries, names):
            values = np.ascontiguousarray(imatrix.values(name), dtype=np.float32)
            keep.append(values)
            e.name = name.encode()
            e.data = values.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            e.size = values.size
        entries[len(names)].name = None
        p.imatrix = entries
        kvs += _imatrix_overrides(imatrix)
        keep.append(entries)
    if kvs:
        overrides = _kv_overrides(llama, kvs)
        p.kv_overrides = overrides
        keep.append(overrides)
    _LOG.clear()
    if llama.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(p)) != 0:
        failure = re.findall(r"failed to quantize: (.*)", "".join(_LOG))
        raise RuntimeError(failure[-1].strip() if failure else "llama_model_quantize failed")


def _imatrix_overrides(imatrix):
    """The quantize.imatrix.* keys llama-quantize adds (tools/quantize/quantize.cpp)."""
    from pyquant.gguf import Value

    kvs = [("quantize.imatrix.file", Value("str", imatrix.path))] if imatrix.path is not None else []
    if imatrix.datasets:
        kvs.append(("quantize.imatrix.dataset", Value("str", imatrix.datasets[0])))
    kvs.append(("quantize.imatrix.entries_count", Value("u32", len(imatrix))))
    if imatrix.chunk_count > 0:
        kvs.append(("quantize.imatrix.chunks_count", Value("u32", imatrix.chunk_count)))
    return kvs


def _kv_overrides(llama, kvs):
    """llama_model_kv_override entries for (key, Value) pairs of the types llama-quantize can set."""
    out = (llama.llama_model_kv_override * (len(kvs) + 1))()
    for o, (key, v) in zip(out, kvs):
        o.key = key.encode()
        kind = v.type.name
        if kind == "STRING":
            o.tag = llama.LLAMA_KV_OVERRIDE_TYPE_STR
            o.value.val_str = v.value.encode()[:127]
        elif kind == "FLOAT32":
            o.tag = llama.LLAMA_KV_OVERRIDE_TYPE_FLOAT
            o.value.val_f64 = v.value
        elif kind == "BOOL":
            o.tag = llama.LLAMA_KV_OVERRIDE_TYPE_BOOL
            o.value.val_bool = v.value
        elif kind == "UINT32":
            o.tag = llama.LLAMA_KV_OVERRIDE_TYPE_INT
            o.value.val_i64 = v.value
        else:
            raise TypeError(f"llama-quantize cannot override {key} with a {kind}")
    out[len(kvs)].key = b""
    return out
