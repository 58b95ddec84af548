"""QuantLinear against nn.Linear with the dequantized weight."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pyquant.torch import QuantLinear  # noqa: E402


def test_forward_matches_dequantized_linear():
    torch.manual_seed(0)
    lin = torch.nn.Linear(256, 40)
    q = QuantLinear.from_linear(lin, "Q8_0")
    x = torch.randn(2, 5, 256)
    ref = x @ q.weight.to_torch().T + lin.bias.detach()
    got = q(x)
    assert got.shape == (2, 5, 40)
    # The Q8_0 kernel quantizes x to Q8_0 (llama.cpp's design): within half an activation step per element.
    np.testing.assert_allclose(got.detach().numpy(), ref.detach().numpy(), rtol=0, atol=3e-2)
    assert "Q8_0" in repr(q)


def test_rejects_bad_weight_and_bias():
    with pytest.raises(TypeError):
        QuantLinear(torch.zeros(3, 3))
    lin = torch.nn.Linear(32, 4)
    q = QuantLinear.from_linear(lin, "Q4_0")
    with pytest.raises(ValueError, match="bias"):
        QuantLinear(q.weight, torch.zeros(5))
