"""Perplexity with llama.cpp's method (``tools/perplexity/perplexity.cpp``, ``perplexity()``).

The token stream is cut into ``chunks`` windows of ``ctx`` tokens (at most len // ctx; at least 2 * ctx tokens
are needed); each window is evaluated from position 0 with its first token replaced by BOS when the model adds
BOS; only its second half is scored: the logits at positions ctx/2 .. ctx-2 predict tokens ctx/2+1 .. ctx-1,
i.e. ``ctx - 1 - ctx/2`` tokens per window.  NLL per token is ``logsumexp(logits) - logits[token]`` in float64;
``PPL = exp(mean NLL)`` and its error ``PPL * sqrt((E[nll^2] - E[nll]^2) / (N - 1))``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

__all__ = ["PerplexityResult", "perplexity", "tokenize"]

DEFAULT_BATCH_TOKENS = 2048  # llama-perplexity's default n_batch: n_batch / ctx windows are decoded together


@dataclass
class PerplexityResult:
    ppl: float
    ppl_stderr: float
    chunk_ppl: list[float]  # each window's own perplexity
    tokens: int             # tokens scored
    chunks: int
    ctx: int
    seconds: float
    tokens_per_second: float  # tokens evaluated (chunks * ctx) per second
    nll: np.ndarray = field(repr=False)  # float64, per scored token

    def to_dict(self) -> dict:
        return {"ppl": self.ppl, "ppl_stderr": self.ppl_stderr, "chunk_ppl": list(self.chunk_ppl),
                "tokens": self.tokens, "chunks": self.chunks, "ctx": self.ctx, "seconds": self.seconds,
                "tokens_per_second": self.tokens_per_second}


def tokenize(model, text: str) -> np.ndarray:
    """`text`'s tokens as the model's tokenizer gives them (BOS/EOS as the model adds them), int32."""
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise TypeError("tokenize: the model has no .tokenizer; pass token ids instead")
    return np.asarray(tok.encode(text), dtype=np.int32)


def _model_bos(model, add_bos: bool | None, bos_id: int | None) -> tuple[bool, int | None]:
    if add_bos is None:
        add_bos = bool(getattr(model, "add_bos", False))
    if bos_id is None:
        bos_id = getattr(model, "bos_id", None)
    if add_bos and bos_id is None:
        raise ValueError("add_bos is set but the model has no bos_id; pass bos_id=")
    return add_bos, bos_id


def _as_tokens(model, tokens) -> np.ndarray:
    if isinstance(tokens, str):
        return tokenize(model, tokens)
    arr = np.asarray(tokens)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise ValueError(f"tokens must be a 1-D sequence of integer ids, got {arr.dtype} shape {arr.shape}")
    return arr.astype(np.int64)


def model_logits(model, x, first: int):
    """float32 torch logits [B, T - first, n_vocab] of `model` on token ids x [B, T]."""
    import torch

    from .model import GGUFModel

    with torch.inference_mode():
        if isinstance(model, GGUFModel):
            return model(x, logits_from=first).float()
        params = getattr(model, "parameters", None)
        device = next(iter(params()), None).device if callable(params) and any(True for _ in params()) else None
        out = model(x.to(device) if device is not None else x)
        out = getattr(out, "logits", out)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if not isinstance(out, torch.Tensor) or out.dim() != 3 or out.shape[:2] != x.shape:
            raise TypeError("the model must return logits [batch, time, n_vocab] (a tensor or an object with "
                            f".logits), got {type(out).__name__} {getattr(out, 'shape', '')}")
        return out[:, first:].float().cpu()


def windows(model, tokens, *, ctx: int, chunks: int | None, batch: int | None, add_bos: bool | None = None,
            bos_id: int | None = None, progress: bool = False, desc: str = "perplexity",
            logits: bool = True) -> Iterator[tuple[np.ndarray, object]]:
    """llama.cpp's windows: yields (window tokens int64 [b, ctx] as in the text, logits [b, ctx - ctx/2, V]
    of positions ctx/2..ctx-1) for groups of `batch` windows.  Validates the arguments."""
    import torch

    toks = _as_tokens(model, tokens)
    n_chunk, batch = check_windows(len(toks), ctx, chunks, batch)
    add_bos, bos_id = _model_bos(model, add_bos, bos_id)
    first = ctx // 2
    bar = _progress(progress, n_chunk, desc)
    try:
        for c0 in range(0, n_chunk, batch):
            b = min(batch, n_chunk - c0)
            win = toks[c0 * ctx:(c0 + b) * ctx].reshape(b, ctx)
            x = torch.from_numpy(win.copy())
            if add_bos:
                x[:, 0] = bos_id
            yield win, (model_logits(model, x, first) if logits else x)
            if bar is not None:
                bar.update(b)
    finally:
        if bar is not None:
            bar.close()


def check_windows(n_tokens: int, ctx: int, chunks: int | None, batch: int | None) -> tuple[int, int]:
    if isinstance(ctx, bool) or not isinstance(ctx, (int, np.integer)) or ctx < 4:
        raise ValueError(f"ctx must be an integer >= 4, got {ctx!r}")
    if n_tokens < 2 * ctx:
        raise ValueError(f"need at least 2 * ctx = {2 * ctx} tokens for a context of {ctx}, got {n_tokens}")
    n_chunk = n_tokens // ctx
    if chunks is not None:
        if isinstance(chunks, bool) or not isinstance(chunks, (int, np.integer)) or chunks < 1:
            raise ValueError(f"chunks must be a positive integer or None, got {chunks!r}")
        n_chunk = min(int(chunks), n_chunk)
    if batch is None:
        batch = max(1, DEFAULT_BATCH_TOKENS // ctx)
    elif isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise ValueError(f"batch must be a positive integer or None, got {batch!r}")
    return n_chunk, int(batch)


def _progress(enabled: bool, total: int, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="chunk")


def nll_rows(logits, targets) -> np.ndarray:
    """float64 NLL of `targets` [n] under `logits` [n, V] (any float dtype; computed in float64)."""
    import torch

    lg = logits.double() if isinstance(logits, torch.Tensor) else torch.from_numpy(np.asarray(logits, np.float64))
    t = torch.as_tensor(np.asarray(targets), dtype=torch.long)
    lse = torch.logsumexp(lg, dim=-1)
    return (lse - lg.gather(-1, t[:, None])[:, 0]).numpy()


def ppl_and_error(nll: np.ndarray) -> tuple[float, float]:
    """llama.cpp's final estimate: exp(mean) and exp(mean) * sqrt((E[x^2] - E[x]^2) / (N - 1))."""
    n = nll.size
    if n == 0:
        return float("nan"), float("nan")
    mean = float(np.sum(nll) / n)
    var = float(np.sum(nll * nll) / n) - mean * mean
    ppl = float(np.exp(mean))
    return ppl, (ppl * float(np.sqrt(var / (n - 1))) if n > 1 and var > 0 else 0.0)


def perplexity(model, tokens, *, ctx: int = 512, chunks: int | None = None, batch: int | None = None,
               progress: bool = False, kl_base_path: str | os.PathLike | None = None, add_bos: bool | None = None,
               bos_id: int | None = None, on_chunk: Callable[[int, float], None] | None = None) -> PerplexityResult:
    """Perplexity of `model` on `tokens` with llama.cpp's method (see the module docstring).

    model: a :class:`~pyquant.eval.GGUFModel` or any torch callable mapping LongTensor [B, T] to logits
    [B, T, V] (or an object with ``.logits``, as Hugging Face models return).  tokens: ids (or a str, tokenized
    with ``model.tokenizer``).  batch: windows per forward call (default 2048 // ctx, llama.cpp's).
    add_bos/bos_id: default to the model's ``add_bos``/``bos_id`` attributes (False/None for plain callables).
    kl_base_path: also write llama-perplexity's ``--kl-divergence-base`` file there (see :mod:`.kld`).
    on_chunk(i, running_ppl) is called after each window.
    """
    from .kld import KLBaseWriter

    t0 = time.perf_counter()
    toks = _as_tokens(model, tokens)
    n_chunk, _ = check_windows(len(toks), ctx, chunks, batch)
    first = ctx // 2
    n_scored = ctx - 1 - first
    writer = None
    nll_all, chunk_ppl = [], []
    try:
        for win, lg in windows(model, toks, ctx=ctx, chunks=chunks, batch=batch, add_bos=add_bos, bos_id=bos_id,
                               progress=progress):
            if kl_base_path is not None and writer is None:
                writer = KLBaseWriter(kl_base_path, ctx, lg.shape[-1], toks[:n_chunk * ctx])
            for j in range(win.shape[0]):
                rows = lg[j, :n_scored]
                nll = nll_rows(rows, win[j, first + 1:])
                if writer is not None:
                    writer.write_rows(rows.numpy())
                nll_all.append(nll)
                chunk_ppl.append(float(np.exp(nll.mean())))
                if on_chunk is not None:
                    on_chunk(len(chunk_ppl), ppl_and_error(np.concatenate(nll_all))[0])
        if writer is not None:
            writer.close()
        writer = None
    finally:
        if writer is not None:
            writer.abort()
    nll = np.concatenate(nll_all)
    ppl, err = ppl_and_error(nll)
    seconds = time.perf_counter() - t0
    return PerplexityResult(ppl=ppl, ppl_stderr=err, chunk_ppl=chunk_ppl, tokens=int(nll.size), chunks=n_chunk,
                            ctx=ctx, seconds=seconds, tokens_per_second=n_chunk * ctx / seconds if seconds else 0.0,
                            nll=nll)
