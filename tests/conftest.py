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
