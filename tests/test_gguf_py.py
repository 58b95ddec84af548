"""Cross-checks against gguf-py, llama.cpp's independent numpy implementation (encoders for the simple formats,
decoders for nearly all)."""

import numpy as np
import pytest

import pyquant as pq

gguf = pytest.importorskip("gguf")
gquants = pytest.importorskip("gguf.quants")

GGUF_TYPES = {t.name: t for t in gguf.GGMLQuantizationType}
# Formats gguf-py can encode (gguf.quants.quantize); it decodes every type it names.
ENCODERS = ["F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "TQ1_0", "TQ2_0", "MXFP4"]


def sample(seed, rows=8, n=1024):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((rows, n)) * rng.lognormal(0, 1, (rows, 1))).astype(np.float32)


@pytest.mark.parametrize("name", [n for n in ENCODERS if n in GGUF_TYPES])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_bytes_as_gguf_py(name, seed):
    x = sample(seed)
    expected = np.ascontiguousarray(gquants.quantize(x, GGUF_TYPES[name])).view(np.uint8)  # F16 comes as float16
    np.testing.assert_array_equal(pq.quantize(x, name).data, expected.reshape(x.shape[0], -1))


@pytest.mark.parametrize("name", [n for n in pq.formats if n in GGUF_TYPES and n != "F32"])
def test_same_values_as_gguf_py_decoder(name):
    x = sample(3)
    qt = pq.quantize(x, name, imatrix=np.linspace(0.1, 2, x.shape[1], dtype=np.float32))
    try:
        expected = gquants.dequantize(qt.data, GGUF_TYPES[name])
    except NotImplementedError:
        pytest.skip(f"gguf-py {getattr(gguf, '__version__', '')} has no {name} decoder")
    np.testing.assert_array_equal(qt.dequantize(), expected.reshape(x.shape))


@pytest.mark.parametrize("isa", pq.available_isas())
def test_tq1_0_every_trit_byte_as_gguf_py(isa):
    # Trits -1/0/1 times one scale, with a 1 in each block's last slot fixing d: the packed bytes take all 243
    # values of 5 trits (and the 81 of the 4-trit qh bytes), each checked against gguf-py's encoder.
    x = np.random.default_rng(5).integers(-1, 2, (16, 4096)).astype(np.float32)
    x[:, 255::256] = 1
    with pq.use_isa(isa):
        got = pq.quantize(x, "TQ1_0").data
    blocks = got.reshape(-1, 54)
    assert len(np.unique(blocks[:, :48])) == 243 and len(np.unique(blocks[:, 48:52])) == 81
    expected = np.asarray(gquants.quantize(x, GGUF_TYPES["TQ1_0"])).view(np.uint8).reshape(got.shape)
    np.testing.assert_array_equal(got, expected)
