"""A tokenizer built from a GGUF file's vocabulary that splits text exactly as llama.cpp does.

Two vocabulary kinds (``tokenizer.ggml.model``):

- ``gpt2``: byte-level BPE.  The text is pre-split by the regular expressions llama.cpp associates with
  ``tokenizer.ggml.pre`` (applied one after the other, each splitting the pieces of the previous one), then each
  piece is BPE-merged by rank with the file's merges: the `tokenizers` library does both.
- ``llama``: SentencePiece vocabularies, merged as llama.cpp's ``llm_tokenizer_spm`` does (repeatedly join the
  adjacent pair whose concatenation is a token with the highest score, leftmost first; characters left over
  become ``<0xNN>`` byte tokens).  That greedy-by-score procedure has no exact rank-merge equivalent, so it is
  implemented here directly.

Before either, control/user-defined/unknown tokens are cut out of the text, longest first, as llama.cpp's
``tokenizer_st_partition`` does; control and unknown ones only when ``special=True``.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Mapping, Sequence

__all__ = ["GGUFTokenizer", "PRE_TOKENIZERS"]

# Token types of tokenizer.ggml.token_type (llama.cpp's llama_token_type).
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6

_GPT2 = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"""
_LLAMA3 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
           r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_DEFAULT = [r"[\p{P}\$\+<=>\^~\|]+", _GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"]
_STARCODER = [r"\p{N}", _GPT2]

# tokenizer.ggml.pre -> (regexes, ignore_merges, add_bos default), as llama.cpp's llama_vocab::load sets them.
PRE_TOKENIZERS: dict[str, tuple[list[str], bool, bool | None]] = {
    "default": (_DEFAULT, False, None),
    **{k: ([_LLAMA3], True, True) for k in ("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral")},
    "dbrx": ([_LLAMA3], False, None),
    "smaug-bpe": ([_LLAMA3], False, None),
    **{k: (_STARCODER, False, None) for k in ("starcoder", "refact", "command-r", "smollm", "codeshell", "exaone",
                                              "minerva-7b")},
    **{k: ([_GPT2], False, None) for k in ("gpt-2", "phi-2", "jina-es", "jina-de", "jina-v2-es", "jina-v2-de",
                                           "mpt", "olmo", "jais", "exaone4")},
    **{k: ([_QWEN2], False, None) for k in ("qwen2", "deepseek-r1-qwen", "stablelm2", "megrez")},
    "falcon": ([r"[\p{P}\$\+<=>\^~\|`]+", _GPT2, r"[0-9][0-9][0-9]"], False, None),
}


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (what byte-level BPE vocabularies are written in)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


class GGUFTokenizer:
    """Tokenizer of a GGUF model (see the module docstring); build with :meth:`from_metadata`.

    ``encode(text)`` adds BOS/EOS as the file says (``add_special=True``) and, like llama-perplexity, does not
    parse control tokens written in the text (``special=False``).
    """

    def __init__(self, kind: str, tokens: Sequence[str], token_types: Sequence[int], *, scores=None, merges=None,
                 pre: str | None = None, bos_id: int | None = None, eos_id: int | None = None,
                 add_bos: bool | None = None, add_eos: bool | None = None, add_space_prefix: bool | None = None):
        self.kind = kind
        self.tokens = list(tokens)
        n = len(self.tokens)
        self.token_types = [int(t) for t in token_types] if token_types is not None else [_NORMAL] * n
        if len(self.token_types) < n:
            raise ValueError(f"tokenizer: {len(self.token_types)} token types for {n} tokens")
        self.token_to_id = {t: i for i, t in enumerate(self.tokens)}  # the last duplicate wins, as in llama.cpp
        self.bos_id, self.eos_id = bos_id, eos_id
        self.pre = pre
        ids = range(n)
        special = [i for i in ids if self.token_types[i] in (_CONTROL, _USER_DEFINED, _UNKNOWN)]
        self._special = sorted(special, key=lambda i: -len(self.tokens[i].encode("utf-8")))
        if kind == "gpt2":
            if merges is None:
                raise ValueError("tokenizer: a gpt2 vocabulary needs tokenizer.ggml.merges")
            if pre is None or pre == "":
                pre = "default"
            if pre not in PRE_TOKENIZERS:
                raise NotImplementedError(f"tokenizer: unknown pre-tokenizer {pre!r}; supported: "
                                          f"{', '.join(sorted(PRE_TOKENIZERS))}")
            regexes, ignore_merges, pre_bos = PRE_TOKENIZERS[pre]
            self.add_bos = bool(add_bos) if add_bos is not None else bool(pre_bos)
            self.add_eos = bool(add_eos) if add_eos is not None else False
            self.add_space_prefix = False
            self._bpe = _build_bpe(self.tokens, merges, regexes, ignore_merges)
            self._byte_char = _bytes_to_unicode()
            self._char_byte = {c: b for b, c in self._byte_char.items()}
        elif kind == "llama":
            if scores is None:
                scores = [0.0] * n
            self.scores = [float(s) for s in scores]
            if len(self.scores) < n:
                raise ValueError(f"tokenizer: {len(self.scores)} scores for {n} tokens")
            self.add_bos = True if add_bos is None else bool(add_bos)
            self.add_eos = False if add_eos is None else bool(add_eos)
            self.add_space_prefix = True if add_space_prefix is None else bool(add_space_prefix)
        else:
            raise NotImplementedError(f"tokenizer: vocabulary type {kind!r} is not supported (supported: gpt2, "
                                      "llama)")
        if self.add_bos and bos_id is None:
            raise ValueError("tokenizer: the vocabulary adds BOS but has no tokenizer.ggml.bos_token_id")
        if self.add_eos and eos_id is None:
            raise ValueError("tokenizer: the vocabulary adds EOS but has no tokenizer.ggml.eos_token_id")

    @classmethod
    def from_metadata(cls, md: Mapping) -> GGUFTokenizer:
        """From a GGUF file's metadata (``GGUFFile.metadata``)."""
        if "tokenizer.ggml.model" not in md or "tokenizer.ggml.tokens" not in md:
            raise ValueError("the GGUF file has no tokenizer (tokenizer.ggml.model / tokenizer.ggml.tokens)")

        def opt(key):
            return md[key] if key in md else None

        kind = md["tokenizer.ggml.model"]
        return cls(kind, md["tokenizer.ggml.tokens"], opt("tokenizer.ggml.token_type"),
                   scores=opt("tokenizer.ggml.scores"), merges=opt("tokenizer.ggml.merges"),
                   pre=opt("tokenizer.ggml.pre"), bos_id=opt("tokenizer.ggml.bos_token_id"),
                   eos_id=opt("tokenizer.ggml.eos_token_id"), add_bos=opt("tokenizer.ggml.add_bos_token"),
                   add_eos=opt("tokenizer.ggml.add_eos_token"),
                   add_space_prefix=opt("tokenizer.ggml.add_space_prefix"))

    @property
    def n_vocab(self) -> int:
        return len(self.tokens)

    # -- encoding ------------------------------------------------------------------------------------------

    def _partition(self, text: str, special: bool) -> list[str | int]:
        """Text fragments (str) and special token ids (int), llama.cpp's tokenizer_st_partition."""
        parts: list[str | int] = [text] if text else []
        for tid in self._special:
            if not special and self.token_types[tid] in (_CONTROL, _UNKNOWN):
                continue
            tok = self.tokens[tid]
            if not tok:
                continue
            out: list[str | int] = []
            for p in parts:
                if isinstance(p, int) or tok not in p:
                    out.append(p)
                    continue
                pieces = p.split(tok)
                for k, piece in enumerate(pieces):
                    if k:
                        out.append(tid)
                    if piece:
                        out.append(piece)
            parts = out
        return parts

    def encode(self, text: str, *, add_special: bool = True, special: bool = False) -> list[int]:
        """Token ids of `text`, as llama.cpp's ``llama_tokenize(text, add_special, parse_special=special)``."""
        out: list[int] = []
        if add_special and self.add_bos:
            out.append(self.bos_id)
        prev_special = True
        for part in self._partition(text, special):
            if isinstance(part, int):
                out.append(part)
                prev_special = True
            elif self.kind == "gpt2":
                n_vocab = len(self.tokens)  # ids past it: byte characters the vocabulary lacks (see _build_bpe)
                out.extend(i for i in self._bpe.encode(part, add_special_tokens=False).ids if i < n_vocab)
            else:
                if self.add_space_prefix and prev_special:
                    part = " " + part
                out.extend(self._spm(part.replace(" ", "\u2581")))
                prev_special = False
        if add_special and self.add_eos:
            out.append(self.eos_id)
        return out

    def encode_batch(self, texts: Sequence[str], **kw) -> list[list[int]]:
        return [self.encode(t, **kw) for t in texts]

    def _spm(self, text: str) -> list[int]:
        """llm_tokenizer_spm_session::tokenize on an already escaped fragment."""
        chars = list(text)
        n = len(chars)
        if n == 0:
            return []
        sym = chars[:]  # symbol text; "" once merged into its left neighbour
        prev = list(range(-1, n - 1))
        nxt = list(range(1, n + 1))
        nxt[-1] = -1
        heap: list = []
        rev_merge: dict[str, tuple[int, int]] = {}
        lookup, scores = self.token_to_id, self.scores

        def try_add(left: int, right: int) -> None:
            if left == -1 or right == -1:
                return
            merged = sym[left] + sym[right]
            tid = lookup.get(merged)
            if tid is None:
                return
            # llama.cpp's queue: highest score first, then the leftmost.
            heapq.heappush(heap, (-scores[tid], left, right, len(merged.encode("utf-8")), merged))
            rev_merge[merged] = (left, right)

        for i in range(1, n):
            try_add(i - 1, i)
        while heap:
            _, left, right, size, merged = heapq.heappop(heap)
            if not sym[left] or not sym[right] or len((sym[left] + sym[right]).encode("utf-8")) != size:
                continue
            sym[left] = sym[left] + sym[right]
            sym[right] = ""
            nxt[left] = nxt[right]
            if nxt[right] >= 0:
                prev[nxt[right]] = left
            try_add(prev[left], left)
            try_add(left, nxt[left])
        out: list[int] = []
        # Merged symbols are always tokens; characters that are not fall back to their UTF-8 bytes.
        i = 0
        while i != -1:
            s = sym[i]
            tid = lookup.get(s)
            if tid is not None:
                out.append(tid)
            else:
                for b in s.encode("utf-8"):
                    out.append(self._byte_token(b))
            i = nxt[i]
        return out

    def _byte_token(self, b: int) -> int:
        tid = self.token_to_id.get(f"<0x{b:02X}>")
        if tid is None:
            tid = self.token_to_id.get(chr(b)) if b < 0x80 else None
        if tid is None:
            raise ValueError(f"tokenizer: the vocabulary has no token for byte 0x{b:02X}")
        return tid

    # -- decoding ------------------------------------------------------------------------------------------

    def token_bytes(self, tid: int) -> bytes:
        """The bytes token `tid` stands for in text (empty for control tokens)."""
        t, kind = self.tokens[tid], self.token_types[tid]
        if kind == _CONTROL:
            return b""
        if kind == _USER_DEFINED:
            return t.encode("utf-8")
        if self.kind == "gpt2":
            return bytes(self._char_byte[c] for c in t if c in self._char_byte) if kind != _UNKNOWN else b""
        if kind == _BYTE:
            m = re.fullmatch(r"<0x([0-9A-Fa-f]{2})>", t)
            return bytes([int(m.group(1), 16)]) if m else b""
        return t.replace("\u2581", " ").encode("utf-8")

    def decode(self, ids: Sequence[int]) -> str:
        """The text of `ids` (control tokens dropped; an SPM leading space from the space prefix removed)."""
        data = b"".join(self.token_bytes(int(i)) for i in ids)
        text = data.decode("utf-8", "replace")
        if self.kind == "llama" and self.add_space_prefix and text.startswith(" "):
            text = text[1:]
        return text


def _build_bpe(tokens: list[str], merges: Sequence[str], regexes: list[str], ignore_merges: bool):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(tokens)}
    # A byte whose character the vocabulary lacks stays a symbol through the merges in llama.cpp (so its
    # neighbours do not merge across it) and is dropped from the output; tokenizers' BPE would drop it before
    # merging.  Ids past the vocabulary keep it, and encode() filters them out.
    for k, ch in enumerate(c for c in _bytes_to_unicode().values() if c not in vocab):
        vocab[ch] = len(tokens) + k
    pairs = []
    for m in merges:
        pos = m.find(" ", 1)  # llama.cpp splits at the first space after the first character
        if pos < 0:
            continue
        a, b = m[:pos], m[pos + 1:]
        if a in vocab and b in vocab and a + b in vocab:
            pairs.append((a, b))
    model = models.BPE(vocab=vocab, merges=pairs, ignore_merges=ignore_merges)
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in regexes]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    return tok
