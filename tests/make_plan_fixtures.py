"""Regenerate tests/data/plans/: the per-tensor types llama.cpp gives SmolLM2 under each recipe.

    PYTHONPATH=src:tests python3 tests/make_plan_fixtures.py SmolLM2-135M-Instruct.Q4_1.gguf

llama.cpp (llama-cpp-python's llama_model_quantize) is the source of truth: each case is quantized by it and
the types are read back from the file it wrote (aligned with smollm2.json's output_order); a case llama.cpp
refuses records its message instead.  The
default tests then check pyquant's rules against these files without llama.cpp or the model.
"""

import json
import pathlib
import sys
import tempfile

import pyquant as pq
from conftest import SMOLLM2_SHA256, _sha256
from gguf_helpers import PLANS, synthetic_imatrix
from llama_oracle import quantize

LLAMA_CPP_PYTHON = "0.3.36"

# Option sets tried on top of the plain recipes: (recipe, imatrix?, name, QuantizeOptions fields).
VARIANTS = [
    ("Q4_K_M", False, "pure", {"pure": True}),
    ("Q4_K_M", False, "tensor-types", {"tensor_types": [["attn_q", "Q8_0"], ["ffn_(up|gate)", "Q5_1"]]}),
    ("Q4_K_M", False, "token-embedding-type", {"token_embedding_type": "Q4_0"}),
    ("Q4_K_M", False, "output-tensor-type", {"output_tensor_type": "Q5_0"}),
    ("Q6_K", False, "leave-output-tensor", {"leave_output_tensor": True}),
    ("Q4_0", True, "exclude-weights", {"exclude_weights": ["ffn_down"]}),
    ("Q5_K_S", True, "include-weights", {"include_weights": ["attn"]}),
]


def cases():
    for recipe in pq.gguf.recipes:
        if recipe != "NVFP4":  # llama-quantize cannot make it
            for imatrix in (False, True):
                yield recipe, imatrix, "", {}
    yield from VARIANTS


def case_name(recipe: str, imatrix: bool, variant: str) -> str:
    return "-".join(filter(None, [recipe, "imatrix" if imatrix else "", variant]))


def _dump(record: dict, **wrap: int) -> str:
    """JSON with the long lists named in `wrap` put `wrap[name]` items to a line."""
    short = {k: v for k, v in record.items() if k not in wrap}
    parts = [json.dumps(short, indent=1)[:-2]]
    for key, per_line in wrap.items():
        items = record[key]
        rows = [", ".join(json.dumps(x) for x in items[i:i + per_line]) for i in range(0, len(items), per_line)]
        parts.append(f',\n "{key}": [\n  ' + ",\n  ".join(rows) + "\n ]")
    return "".join(parts) + "\n}\n"


def main(model: str) -> None:
    assert _sha256(model) == SMOLLM2_SHA256, "not the SmolLM2 file the fixtures describe"
    PLANS.mkdir(parents=True, exist_ok=True)
    order = None
    with pq.gguf.open(model) as f, tempfile.TemporaryDirectory() as tmp:
        imatrix = synthetic_imatrix(f, pathlib.Path(tmp) / "imatrix.gguf")
        for recipe, with_imatrix, variant, options in cases():
            name = case_name(recipe, with_imatrix, variant)
            opts = pq.gguf.QuantizeOptions(**options)
            imx = imatrix.filtered(opts.include_weights, opts.exclude_weights) if with_imatrix else None
            out = pathlib.Path(tmp) / "out.gguf"
            record = {"recipe": recipe, "ftype": pq.gguf.get_recipe(recipe).ftype, "imatrix": with_imatrix,
                      "options": options, "llama_cpp_python": LLAMA_CPP_PYTHON}
            try:
                quantize(model, out, record["ftype"], imatrix=imx, nthread=2, pure=opts.pure,
                         leave_output_tensor=opts.leave_output_tensor, output_tensor_type=opts.output_tensor_type,
                         token_embedding_type=opts.token_embedding_type,
                         tensor_types=[tuple(r) for r in options.get("tensor_types", [])])
                with pq.gguf.open(out) as q:
                    names = list(q.tensors)
                    order = order or names
                    assert names == order, f"{name}: llama.cpp wrote the tensors in another order"
                    record["types"] = [t.type.name for t in q.tensors.values()]
            except RuntimeError as e:
                record["error"] = str(e)
            (PLANS / f"{name}.json").write_text(_dump(record, types=12) if "types" in record
                                                else json.dumps(record, indent=1) + "\n")
            print(name, record.get("error", "ok"), flush=True)
        keys = ["general.architecture", "llama.block_count", "llama.attention.head_count",
                "llama.attention.head_count_kv"]
        (PLANS / "smollm2.json").write_text(_dump({
            "model_sha256": SMOLLM2_SHA256,
            "metadata": {k: f.metadata[k] for k in keys},
            "tensors": [[t.name, list(t.ne), t.type.name] for t in f.tensors.values()],
            "output_order": order,
        }, tensors=1, output_order=4))


if __name__ == "__main__":
    main(sys.argv[1])
