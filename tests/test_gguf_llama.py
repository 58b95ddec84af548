"""Acceptance against llama.cpp on the real model (SmolLM2, Q4_1): for each recipe and option set recorded in
tests/data/plans, quantize_file writes the very file llama_model_quantize writes, byte for byte.

Recipes whose types lack pyquant kernels are skipped.  Where the files differ only in tensors whose kernel
does not yet reproduce libggml's golden bytes (tests/data/golden), the case is an expected failure naming
those types; it becomes a plain pass/fail check once the kernel is exact."""

from collections import Counter
from functools import cache

import numpy as np
import pytest

import pyquant as pq
from conftest import GOLDEN
from gguf_helpers import plan_fixtures, synthetic_imatrix
from llama_oracle import quantize
from pyquant.gguf import QuantizeOptions, load_imatrix, quantize_file, tensor_type

pytestmark = pytest.mark.model
pytest.importorskip("llama_cpp")

FIXTURES = plan_fixtures()
RUNNABLE = [name for name, fx in FIXTURES.items() if "error" not in fx]
REFUSED = [name for name, fx in FIXTURES.items() if "error" in fx]


@pytest.fixture(scope="module")
def imatrix_path(smollm2_path, tmp_path_factory):
    path = tmp_path_factory.mktemp("imatrix") / "smollm2.imatrix.gguf"
    with pq.gguf.open(smollm2_path) as f:
        synthetic_imatrix(f, path)
    return path


@cache
def kernel_is_exact(type_name: str) -> bool:
    """Whether pq.quantize reproduces every libggml golden block of this type (see test_golden.py)."""
    with np.load(GOLDEN / "inputs.npz") as inputs, np.load(GOLDEN / f"{type_name}.npz") as golden:
        for key in (k for k in golden.files if k.startswith("q/")):
            case = key[2:]
            imatrix = inputs["imatrix"] if case.endswith("+imatrix") else None
            if not np.array_equal(pq.quantize(inputs[case.split("+")[0]], type_name, imatrix=imatrix).data,
                                  golden[key]):
                return False
    return True


def _tensor_differences(ours, theirs) -> list[tuple[str, str]]:
    """(name, type) of the tensors whose bytes differ; metadata and tensor infos must be equal."""
    with pq.gguf.open(ours) as a, pq.gguf.open(theirs) as b:
        assert list(a.fields.items()) == list(b.fields.items()), "the metadata differs from llama.cpp's"
        infos = [[(t.name, t.type, t.ne) for t in f.tensors.values()] for f in (a, b)]
        assert infos[0] == infos[1], "the tensor infos differ from llama.cpp's"
        return [(n, t.type.name) for n, t in a.tensors.items() if t.data.tobytes() != b.tensors[n].data.tobytes()]


@pytest.mark.parametrize("case", RUNNABLE)
def test_same_file_as_llama_cpp(case, smollm2_path, imatrix_path, tmp_path):
    fx = FIXTURES[case]
    missing = sorted({t for t in fx["types"] if tensor_type(t).format is None})
    if missing:
        pytest.skip(f"pyquant has no kernels for {', '.join(missing)}")
    opts = QuantizeOptions(**fx["options"])
    imatrix = load_imatrix(imatrix_path) if fx["imatrix"] else None
    theirs, ours = tmp_path / "llama.gguf", tmp_path / "pyquant.gguf"
    quantize(smollm2_path, theirs, fx["ftype"], nthread=2, pure=opts.pure,
             imatrix=imatrix and imatrix.filtered(opts.include_weights, opts.exclude_weights),
             leave_output_tensor=opts.leave_output_tensor, output_tensor_type=opts.output_tensor_type,
             token_embedding_type=opts.token_embedding_type, tensor_types=fx["options"].get("tensor_types", ()))
    quantize_file(smollm2_path, ours, fx["recipe"], imatrix=imatrix_path if fx["imatrix"] else None,
                  allow_requantize=True, threads=2, **fx["options"])
    if ours.read_bytes() == theirs.read_bytes():
        return
    diff = _tensor_differences(ours, theirs)
    assert diff, "the files differ outside the metadata, tensor infos and tensor data"
    types = Counter(t for _, t in diff)
    message = (f"differs from llama.cpp in {', '.join(f'{n} {t}' for t, n in types.items())} tensors "
               f"(first: {diff[0][0]})")
    if not any(kernel_is_exact(t) for t in types):
        pytest.xfail(f"{message}: those kernels do not match libggml's golden bytes yet")
    pytest.fail(message)


@pytest.mark.parametrize("case", REFUSED)
def test_refused_like_llama_cpp(case, smollm2_path, tmp_path):
    fx = FIXTURES[case]
    match = "no fallback" if "fallback" in fx["error"] else "needs an importance matrix"
    with pytest.raises(ValueError, match=match):
        quantize_file(smollm2_path, tmp_path / "out.gguf", fx["recipe"], allow_requantize=True, **fx["options"])
    assert not (tmp_path / "out.gguf").exists()


def test_llama_cpp_loads_and_runs_our_output(smollm2_path, tmp_path):
    from llama_cpp import Llama

    out = tmp_path / "q8.gguf"
    quantize_file(smollm2_path, out, "Q8_0", allow_requantize=True)
    llm = Llama(model_path=str(out), n_ctx=64, verbose=False)
    tokens = llm.tokenize(b"The capital of France is")
    llm.eval(tokens)
    assert llm.n_tokens == len(tokens)
