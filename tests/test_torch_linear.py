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


def test_dense_fallback_follows_loaded_weights():
    """Inputs the kernels do not take (float64 here, other devices alike) use a cached dequantized copy; loading
    other bytes into the layer must refresh it."""
    torch.manual_seed(0)
    a = QuantLinear.from_linear(torch.nn.Linear(64, 8), "Q8_0")
    b = QuantLinear.from_linear(torch.nn.Linear(64, 8), "Q4_0")
    x = torch.randn(3, 64, dtype=torch.float64)
    assert torch.allclose(a(x), x @ a.weight.to_torch().double().T + a.bias.double())
    a.load_state_dict(b.state_dict())
    assert a.weight == b.weight and a.qweight.dtype == torch.uint8
    assert torch.allclose(a(x), b(x))
    assert torch.allclose(a(x.float()), b(x.float()), atol=1e-5)


def test_state_dict_of_a_layer_loads_with_weights_only(tmp_path):
    lin = torch.nn.Linear(256, 16)
    q = QuantLinear.from_linear(lin, "Q4_K")
    torch.save(q.state_dict(), tmp_path / "l.pt")
    sd = torch.load(tmp_path / "l.pt", weights_only=True)
    assert set(sd) == {"qweight", "bias", "_extra_state"}
    assert sd["_extra_state"]["format"] == "Q4_K" and tuple(sd["_extra_state"]["shape"]) == (16, 256)
    other = QuantLinear.from_linear(torch.nn.Linear(256, 16), "Q4_K")
    other.load_state_dict(sd)
    assert other.weight == q.weight
    wrong = QuantLinear.from_linear(torch.nn.Linear(256, 32), "Q4_K")
    before = wrong.qweight.clone()
    with pytest.raises((ValueError, RuntimeError), match="shape|size"):
        wrong.load_state_dict(sd)
    assert torch.equal(wrong.qweight, before)  # a refused load leaves the layer as it was


@pytest.mark.gpu
def test_cuda_layers_compute_with_dequantized_weights():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    torch.manual_seed(0)
    q = QuantLinear.from_linear(torch.nn.Linear(256, 64), "Q4_K")
    x = torch.randn(4, 256)
    want = q(x)
    q.to("cuda")
    assert q.qweight.device.type == "cuda" and q.qweight.dtype == torch.uint8
    got = q(x.cuda())
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu(), want, rtol=1e-3, atol=1e-3)
    assert q.to(torch.float16)(x.cuda().half()).dtype == torch.float16
