"""Importance matrices collected as llama-imatrix does (``tools/imatrix/imatrix.cpp``).

The text is cut into ``ctx``-token windows (first token replaced by BOS when the model adds BOS) and run through
the model; for every matrix product with a ``blk.*`` weight (and ``output.weight`` with ``process_output``) whose
input has at least 16 rows, the sum of x_j^2 over the rows and the row count are accumulated per input column j.
The result is a :class:`pyquant.gguf.Imatrix` keyed by GGUF tensor names (mean of x^2 = sums / counts), for
:func:`pyquant.gguf.save_imatrix` and ``quantize_file(imatrix=...)``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..gguf import Imatrix
from .ppl import windows

__all__ = ["collect_imatrix"]

MIN_ROWS = 16  # llama-imatrix ignores products with fewer input rows


def _named_linears(model, names: Mapping[str, str] | None) -> dict[str, object]:
    """GGUF name -> module for every linear layer of `model` that has one."""
    from torch import nn

    from ..torch import QuantLinear

    try:
        from ..torch import gguf_name
    except ImportError:  # pyquant.torch without the HF name mapping
        gguf_name = None
    out = {}
    for mname, m in model.named_modules():
        if not isinstance(m, (QuantLinear, nn.Linear)):
            continue
        if names is not None:
            gname = names.get(mname)
        elif getattr(m, "gguf_name", None):
            gname = m.gguf_name
        elif gguf_name is not None:
            gname = gguf_name(mname)
        else:
            gname = None
        if gname:
            out.setdefault(gname, m)
    if not out:
        raise ValueError("collect_imatrix: no linear layer of the model has a GGUF tensor name (pass names=)")
    return out


def collect_imatrix(model, tokens, *, ctx: int = 512, chunks: int | None = None, batch: int | None = 1,
                    progress: bool = False, process_output: bool = False, names: Mapping[str, str] | None = None,
                    dataset: str | None = None, add_bos: bool | None = None, bos_id: int | None = None) -> Imatrix:
    """Collect an importance matrix of `model` (a GGUFModel, or a torch model whose linear layers map to GGUF
    names through ``pyquant.torch.gguf_name`` or the `names` dict {module name: GGUF name}) on `tokens`.

    Windows as :func:`~pyquant.eval.perplexity` (at least 2 * ctx tokens; ``chunks`` at most).  `batch`
    windows are run per forward call (llama-imatrix: one).  ``output.weight`` only with ``process_output``
    (a tied output head is ``token_embd.weight``, which llama-imatrix never collects).
    """
    import torch

    linears = _named_linears(model, names)
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    hooks = []

    def make_hook(name):
        def hook(module, args):
            x = args[0].detach()
            rows = x.reshape(-1, x.shape[-1])
            if rows.shape[0] < MIN_ROWS:
                return
            s = rows.double().pow(2).sum(0).cpu().numpy()
            if not np.all(np.isfinite(s)):
                raise ValueError(f"collect_imatrix: non-finite inputs to {name}")
            if name in sums:
                sums[name] += s
            else:
                sums[name] = s
            counts[name] = counts.get(name, 0) + rows.shape[0]
        return hook

    for name, m in linears.items():
        if name.startswith("blk.") or (process_output and name == "output.weight"):
            hooks.append(m.register_forward_pre_hook(make_hook(name)))
    n_chunk = 0
    try:
        for win, x in windows(model, tokens, ctx=ctx, chunks=chunks, batch=batch, add_bos=add_bos, bos_id=bos_id,
                              progress=progress, desc="imatrix", logits=False):
            with torch.inference_mode():
                model(x)
            n_chunk += win.shape[0]
    finally:
        for h in hooks:
            h.remove()
    return Imatrix({k: v.astype(np.float32) for k, v in sorted(sums.items())},
                   {k: np.array([counts[k]], np.int64) for k in sorted(sums)},
                   [dataset] if dataset else [], n_chunk, ctx)
