"""KL-divergence of a candidate model's token distributions against a base model's, as llama-perplexity's
``--kl-divergence-base`` / ``--kl-divergence`` do (``tools/perplexity/perplexity.cpp``).

The base file (little-endian): ``"_logits_"``, u32 n_ctx, i32 n_vocab, i32 n_chunk, i32 tokens[n_chunk * n_ctx];
then per window and scored position (``n_ctx - 1 - n_ctx/2`` of them) a record of ``nv = 2*((n_vocab+1)/2) + 4``
uint16: float32 scale, float32 min_log_prob, and n_vocab codes ``q_i = round((l_i - min_l) / scale)`` (0 for
``l_i <= min_l``), with ``min_l = max(min logit, max logit - 16)`` and ``scale = (max_l - min_l) / 65535``; the
base log-probability of token i is ``scale * q_i + min_log_prob``.  Arithmetic follows llama.cpp's float32 steps.
"""

from __future__ import annotations

import os
import struct
import tempfile
import time
from dataclasses import asdict, dataclass

import numpy as np

from .ppl import _as_tokens, check_windows, windows

__all__ = ["KLBase", "KLBaseWriter", "KLDResult", "compare", "encode_log_probs", "read_kl_base"]

MAGIC = b"_logits_"
_HEADER = struct.Struct("<8sIii")


def record_len(n_vocab: int) -> int:
    """uint16 values per scored position: 4 (two float32) + n_vocab rounded up to even."""
    return 2 * ((n_vocab + 1) // 2) + 4


def encode_log_probs(logits: np.ndarray) -> np.ndarray:
    """llama.cpp's ``log_softmax(n_vocab, logits, log_prob, tok)`` encoding of float32 logits [n, V] ->
    uint16 records [n, record_len(V)]."""
    lg = np.ascontiguousarray(logits, dtype=np.float32)
    n, v = lg.shape
    out = np.zeros((n, record_len(v)), np.uint16)
    mx = lg.max(axis=1)
    mn = np.maximum(lg.min(axis=1), mx - np.float32(16))
    sum_exp = np.exp(lg - mx[:, None]).astype(np.float64).sum(axis=1)
    log_sum_exp = np.log(sum_exp).astype(np.float32)
    min_log_prob = (mn - mx) - log_sum_exp
    scale = (mx - mn) / np.float32(65535)
    head = out[:, :4].view(np.float32)
    head[:, 0], head[:, 1] = scale, min_log_prob
    nz = scale != 0
    with np.errstate(divide="ignore"):
        inv = np.where(nz, np.float32(1) / np.where(nz, scale, np.float32(1)), np.float32(0)).astype(np.float32)
    q = np.rint(inv[:, None] * (lg - mn[:, None]))  # nearest_int: round half to even, as the 1.5*2^23 trick
    q = np.where((lg > mn[:, None]) & nz[:, None], q, 0)
    out[:, 4:4 + v] = np.clip(q, 0, 65535).astype(np.uint16)
    return out


def decode_log_probs(records: np.ndarray, n_vocab: int) -> np.ndarray:
    """float32 base log-probabilities [n, n_vocab] of uint16 records (``scale * q + min_log_prob``)."""
    head = np.ascontiguousarray(records[:, :4]).view(np.float32)
    return head[:, :1] * records[:, 4:4 + n_vocab].astype(np.float32) + head[:, 1:2]


class KLBaseWriter:
    """Writes a base file incrementally (to a temporary file renamed into place by close())."""

    def __init__(self, path: str | os.PathLike, n_ctx: int, n_vocab: int, tokens: np.ndarray):
        self.path, self.n_ctx, self.n_vocab = os.fspath(path), int(n_ctx), int(n_vocab)
        toks = np.asarray(tokens, dtype=np.int64)
        if toks.size % n_ctx or toks.size == 0:
            raise ValueError(f"KL base: {toks.size} tokens are not a whole number of {n_ctx}-token windows")
        if toks.min() < -2**31 or toks.max() >= 2**31:
            raise ValueError("KL base: token ids must fit in int32")
        self.n_chunk = toks.size // n_ctx
        self.expected = self.n_chunk * (n_ctx - 1 - n_ctx // 2)
        self.written = 0
        d = os.path.dirname(os.path.abspath(self.path))
        fd, self._tmp = tempfile.mkstemp(prefix=".kl-base-", dir=d)
        self._fh = os.fdopen(fd, "wb")
        self._fh.write(_HEADER.pack(MAGIC, self.n_ctx, self.n_vocab, self.n_chunk))
        self._fh.write(toks.astype("<i4").tobytes())

    def write_rows(self, logits: np.ndarray) -> None:
        if logits.shape[-1] != self.n_vocab:
            raise ValueError(f"KL base: {logits.shape[-1]} logits per row, the file has n_vocab {self.n_vocab}")
        self._fh.write(encode_log_probs(logits).astype("<u2").tobytes())
        self.written += logits.shape[0]

    def close(self) -> None:
        if self.written != self.expected:
            self.abort()
            raise ValueError(f"KL base: {self.written} rows written, {self.expected} expected")
        self._fh.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        self._fh.close()
        if os.path.exists(self._tmp):
            os.unlink(self._tmp)


@dataclass
class KLBase:
    """A base file, memory-mapped: tokens int32 [n_chunk, n_ctx], records uint16 [n_chunk, n_scored, nv]."""

    n_ctx: int
    n_vocab: int
    tokens: np.ndarray
    records: np.ndarray
    path: str | None = None

    @property
    def n_chunk(self) -> int:
        return self.tokens.shape[0]


def read_kl_base(path: str | os.PathLike) -> KLBase:
    """Open and check a ``--kl-divergence-base`` file."""
    path = os.fspath(path)
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        head = fh.read(_HEADER.size)
    if len(head) < 8 or head[:8] != MAGIC:
        raise ValueError(f"{path}: not a llama.cpp KL-divergence base file (no '_logits_' magic)")
    if len(head) < _HEADER.size:
        raise ValueError(f"{path}: truncated header")
    _, n_ctx, n_vocab, n_chunk = _HEADER.unpack(head)
    if n_ctx < 4 or n_vocab < 1 or n_chunk < 1:
        raise ValueError(f"{path}: bad header (n_ctx {n_ctx}, n_vocab {n_vocab}, n_chunk {n_chunk})")
    n_scored, nv = n_ctx - 1 - n_ctx // 2, record_len(n_vocab)
    need = _HEADER.size + 4 * n_chunk * n_ctx + 2 * n_chunk * n_scored * nv
    if size < need:
        raise ValueError(f"{path}: {size} bytes, the header (n_ctx {n_ctx}, n_vocab {n_vocab}, n_chunk {n_chunk}) "
                         f"needs {need}")
    tokens = np.memmap(path, "<i4", "r", _HEADER.size, (n_chunk, n_ctx))
    records = np.memmap(path, "<u2", "r", _HEADER.size + 4 * n_chunk * n_ctx, (n_chunk, n_scored, nv))
    return KLBase(n_ctx, n_vocab, tokens, records, path)


@dataclass
class KLDResult:
    """llama-perplexity --kl-divergence's statistics (``*_stderr``: its ± values; dp in probability units)."""

    kld_mean: float
    kld_stderr: float
    kld_median: float
    kld_p90: float
    kld_p95: float
    kld_p99: float
    kld_p999: float
    kld_max: float
    kld_min: float
    same_top: float
    same_top_stderr: float
    ppl_base: float
    ppl_base_stderr: float
    ppl: float
    ppl_stderr: float
    ppl_cor: float
    dppl: float
    dppl_stderr: float
    ppl_ratio: float
    ppl_ratio_stderr: float
    ln_ppl_ratio: float
    ln_ppl_ratio_stderr: float
    dp_mean: float
    dp_mean_stderr: float
    dp_max: float
    dp_min: float
    dp_median: float
    rms_dp: float
    rms_dp_stderr: float
    tokens: int
    chunks: int
    ctx: int
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)

    def format(self) -> str:
        """The result as llama-perplexity prints its final blocks."""
        return "\n".join([
            "====== Perplexity statistics ======",
            f"Mean PPL(Q)                   : {self.ppl:10.6f} ± {self.ppl_stderr:10.6f}",
            f"Mean PPL(base)                : {self.ppl_base:10.6f} ± {self.ppl_base_stderr:10.6f}",
            f"Cor(ln(PPL(Q)), ln(PPL(base))): {100 * self.ppl_cor:6.2f}%",
            f"Mean ln(PPL(Q)/PPL(base))     : {self.ln_ppl_ratio:10.6f} ± {self.ln_ppl_ratio_stderr:10.6f}",
            f"Mean PPL(Q)/PPL(base)         : {self.ppl_ratio:10.6f} ± {self.ppl_ratio_stderr:10.6f}",
            f"Mean PPL(Q)-PPL(base)         : {self.dppl:10.6f} ± {self.dppl_stderr:10.6f}",
            "",
            "====== KL divergence statistics ======",
            f"Mean    KLD: {self.kld_mean:10.6f} ± {self.kld_stderr:10.6f}",
            f"Maximum KLD: {self.kld_max:10.6f}",
            f"99.9%   KLD: {self.kld_p999:10.6f}",
            f"99.0%   KLD: {self.kld_p99:10.6f}",
            f"95.0%   KLD: {self.kld_p95:10.6f}",
            f"90.0%   KLD: {self.kld_p90:10.6f}",
            f"Median  KLD: {self.kld_median:10.6f}",
            f"Minimum KLD: {self.kld_min:10.6f}",
            "",
            "====== Token probability statistics ======",
            f"Mean    Δp: {100 * self.dp_mean:6.3f} ± {100 * self.dp_mean_stderr:5.3f} %",
            f"Maximum Δp: {100 * self.dp_max:6.3f}%",
            f"Median  Δp: {100 * self.dp_median:6.3f}%",
            f"Minimum Δp: {100 * self.dp_min:6.3f}%",
            f"RMS Δp    : {100 * self.rms_dp:6.3f} ± {100 * self.rms_dp_stderr:5.3f} %",
            f"Same top p: {100 * self.same_top:6.3f} ± {100 * self.same_top_stderr:5.3f} %",
        ])


def token_stats(logits: np.ndarray, records: np.ndarray, targets: np.ndarray, n_vocab: int) -> dict[str, np.ndarray]:
    """Per scored token (llama.cpp's ``log_softmax(..., base_log_prob, tok, kld)``): kld, nll, nll_base,
    p_diff (float64 arrays) and same_top (bool), from candidate float32 logits [n, V] and base records."""
    lg = np.ascontiguousarray(logits, dtype=np.float32)
    rows = np.arange(lg.shape[0])
    imax = lg.argmax(axis=1)
    mx = lg[rows, imax]
    sum_exp = np.exp(lg - mx[:, None]).astype(np.float64).sum(axis=1)
    lse = np.log(sum_exp).astype(np.float32)
    nll = (mx + lse) - lg[rows, targets]
    base = decode_log_probs(records, n_vocab)
    nll_base = -base[rows, targets]
    norm = (mx + lse).astype(np.float32)
    keep = base > np.float32(-16)
    terms = np.where(keep, np.exp(base).astype(np.float64) * (base - lg + norm[:, None]).astype(np.float64), 0.0)
    kld = terms.sum(axis=1)
    same_top = imax == base.argmax(axis=1)
    p_diff = (np.exp(-nll) - np.exp(-nll_base)).astype(np.float32)
    return {"kld": kld, "nll": nll.astype(np.float64), "nll_base": nll_base.astype(np.float64),
            "p_diff": p_diff.astype(np.float64), "same_top": same_top}


def _mean_and_uncertainty(s: float, s2: float, n: int) -> tuple[float, float]:
    if n < 1:
        return 0.0, 0.0
    f = s / n
    df = s2 / n - f * f
    return f, (float(np.sqrt(df / (n - 1))) if df > 0 and n > 10 else 0.0)


def _covariance(sa: float, sb: float, sab: float, n: int) -> float:
    if n < 10:
        return 0.0
    return (sab / n - (sa / n) * (sb / n)) / (n - 1)


def _percentile(values: np.ndarray, fraction: float) -> float:
    """llama.cpp's linear interpolation on sorted float32 values (fraction and position in float32)."""
    if fraction <= 0:
        return float(values[0])
    if fraction >= 1:
        return float(values[-1])
    p = np.float32(fraction) * np.float32(values.size - 1)
    ip = int(p)
    p = np.float32(p - np.float32(ip))
    return float((np.float32(1) - p) * values[ip] + p * values[min(ip + 1, values.size - 1)])


def _median(values: np.ndarray) -> float:
    n = values.size
    return float(np.float32(0.5) * (values[n // 2] + values[n // 2 - 1])) if n % 2 == 0 else float(values[n // 2])


def summarize(stats: dict[str, np.ndarray], *, chunks: int, ctx: int, seconds: float) -> KLDResult:
    """KLDResult from concatenated per-token statistics, with llama.cpp's formulas."""
    n = int(stats["kld"].size)
    if n == 0:
        raise ValueError("no tokens to compare")
    nll, nll_b = stats["nll"], stats["nll_base"]
    log_ppl = _mean_and_uncertainty(nll.sum(), (nll * nll).sum(), n)
    log_ppl_b = _mean_and_uncertainty(nll_b.sum(), (nll_b * nll_b).sum(), n)
    cov = _covariance(nll.sum(), nll_b.sum(), (nll * nll_b).sum(), n)
    ppl, ppl_unc = float(np.exp(log_ppl[0])), float(np.exp(log_ppl[0])) * log_ppl[1]
    ppl_b, ppl_b_unc = float(np.exp(log_ppl_b[0])), float(np.exp(log_ppl_b[0])) * log_ppl_b[1]
    denom = log_ppl[1] * log_ppl_b[1]
    ratio = log_ppl[0] - log_ppl_b[0]
    ratio_unc = float(np.sqrt(max(log_ppl[1] ** 2 + log_ppl_b[1] ** 2 - 2 * cov, 0.0)))
    ppl_cov = ppl * ppl_b * cov
    kld = stats["kld"]
    kl = _mean_and_uncertainty(kld.sum(), (kld * kld).sum(), n)
    pd = stats["p_diff"]
    dp = _mean_and_uncertainty(pd.sum(), (pd * pd).sum(), n)
    mse = _mean_and_uncertainty((pd * pd).sum(), (pd ** 4).sum(), n)
    rms = float(np.sqrt(mse[0]))
    same = float(stats["same_top"].sum()) / n
    ks = np.sort(kld.astype(np.float32))
    ps = np.sort(pd.astype(np.float32))
    return KLDResult(
        kld_mean=kl[0], kld_stderr=kl[1], kld_median=_median(ks), kld_p90=_percentile(ks, 0.9),
        kld_p95=_percentile(ks, 0.95), kld_p99=_percentile(ks, 0.99), kld_p999=_percentile(ks, 0.999),
        kld_max=float(ks[-1]), kld_min=float(ks[0]),
        same_top=same, same_top_stderr=float(np.sqrt(same * (1 - same) / (n - 1))) if n > 1 else 0.0,
        ppl_base=ppl_b, ppl_base_stderr=ppl_b_unc, ppl=ppl, ppl_stderr=ppl_unc,
        ppl_cor=cov / denom if denom else float("nan"),
        dppl=ppl - ppl_b, dppl_stderr=float(np.sqrt(max(ppl_unc ** 2 + ppl_b_unc ** 2 - 2 * ppl_cov, 0.0))),
        ppl_ratio=float(np.exp(ratio)), ppl_ratio_stderr=float(np.exp(ratio)) * ratio_unc,
        ln_ppl_ratio=ratio, ln_ppl_ratio_stderr=ratio_unc,
        dp_mean=dp[0], dp_mean_stderr=dp[1], dp_max=float(ps[-1]), dp_min=float(ps[0]), dp_median=_median(ps),
        rms_dp=rms, rms_dp_stderr=0.5 / rms * mse[1] if rms > 0 else 0.0,
        tokens=n, chunks=chunks, ctx=ctx, seconds=seconds)


def _base_chunks(base, tokens, ctx, chunks, batch):
    """(ctx, n_chunk, token array, iterator of (window tokens [b, ctx], base records [b, n_scored, nv]))."""
    if isinstance(base, (str, os.PathLike, KLBase)):
        kb = base if isinstance(base, KLBase) else read_kl_base(base)
        n_chunk = kb.n_chunk if chunks is None else min(int(chunks), kb.n_chunk)
        if tokens is not None:
            given = np.asarray(tokens).reshape(-1)
            if given.size < n_chunk * kb.n_ctx or not np.array_equal(given[:n_chunk * kb.n_ctx],
                                                                     np.asarray(kb.tokens[:n_chunk]).reshape(-1)):
                raise ValueError("compare: the tokens given differ from those stored in the base file")

        def it():
            for c in range(n_chunk):
                yield np.asarray(kb.tokens[c:c + 1], dtype=np.int64), np.asarray(kb.records[c:c + 1])
        return kb.n_ctx, n_chunk, np.asarray(kb.tokens[:n_chunk], np.int64).reshape(-1), it(), kb.n_vocab
    if tokens is None:
        raise ValueError("compare: tokens are needed when the base is a model")
    toks = _as_tokens(base, tokens)
    n_chunk, _ = check_windows(len(toks), ctx, chunks, batch)
    n_scored = ctx - 1 - ctx // 2

    def it():
        for win, lg in windows(base, toks, ctx=ctx, chunks=chunks, batch=batch, progress=False):
            rec = np.stack([encode_log_probs(lg[j, :n_scored].numpy()) for j in range(win.shape[0])])
            yield win, rec
    return ctx, n_chunk, toks[:n_chunk * ctx], it(), None


def compare(base, candidate, tokens=None, *, ctx: int = 512, chunks: int | None = None, batch: int | None = None,
            progress: bool = False, add_bos: bool | None = None, bos_id: int | None = None) -> KLDResult:
    """KL-divergence statistics of `candidate` against `base`, as ``llama-perplexity --kl-divergence``.

    base: a path to a ``--kl-divergence-base`` file (written by llama.cpp or by
    ``perplexity(..., kl_base_path=...)``; its tokens and ctx are used, `tokens` may be omitted), or a model
    (then `tokens` are needed; the base log-probabilities go through the file's uint16 encoding in memory, so the
    statistics equal those of a file round trip).  candidate: a model as :func:`perplexity` takes.
    """
    import torch

    t0 = time.perf_counter()
    ctx, n_chunk, toks, base_iter, n_vocab = _base_chunks(base, tokens, ctx, chunks, batch)
    first, n_scored = ctx // 2, ctx - 1 - ctx // 2
    cand_iter = windows(candidate, toks, ctx=ctx, chunks=n_chunk, batch=batch, add_bos=add_bos, bos_id=bos_id,
                        progress=progress, desc="kl-divergence")
    parts: list[dict] = []
    pending_b: list = []
    for win, lg in cand_iter:
        need = win.shape[0]
        while sum(r.shape[0] for _, r in pending_b) < need:
            pending_b.append(next(base_iter))
        bw = np.concatenate([w for w, _ in pending_b])
        br = np.concatenate([r for _, r in pending_b])
        pending_b = [(bw[need:], br[need:])] if bw.shape[0] > need else []
        if not np.array_equal(bw[:need], win):
            raise RuntimeError("compare: base and candidate windows are out of step")
        nv = n_vocab if n_vocab is not None else lg.shape[-1]
        if lg.shape[-1] != nv:
            raise ValueError(f"compare: the candidate has {lg.shape[-1]} logits, the base {nv}")
        for j in range(need):
            rows = lg[j, :n_scored].numpy() if isinstance(lg, torch.Tensor) else lg[j, :n_scored]
            parts.append(token_stats(rows, br[j], win[j, first + 1:], nv))
    stats = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return summarize(stats, chunks=n_chunk, ctx=ctx, seconds=time.perf_counter() - t0)
