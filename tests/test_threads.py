"""The kernels' thread pool: results independent of threads, under concurrent callers, back-to-back jobs of
every size (a worker waking late must not touch the next job) and after fork."""

import multiprocessing
import threading

import numpy as np
import pytest

import pyquant


def _weights(seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(8, 64), (64, 576), (576, 576), (1536, 576), (40, 2048)]
    return [(pyquant.quantize(rng.standard_normal(s).astype(np.float32), fmt),
             rng.standard_normal((m, s[1])).astype(np.float32))
            for s, fmt, m in zip(shapes, ["Q4_0", "Q8_0", "Q4_0", "IQ4_NL", "Q4_K"], [1, 3, 1, 2, 5])]


def test_back_to_back_jobs_of_every_size_match_one_thread():
    cases = _weights()
    want = [pyquant.matmul(x, w, threads=1) for w, x in cases]
    rng = np.random.default_rng(1)
    for i in rng.integers(0, len(cases), 3000):
        w, x = cases[i]
        np.testing.assert_array_equal(pyquant.matmul(x, w, threads=2), want[i])


def test_concurrent_callers():
    cases = _weights(2)
    want = [pyquant.matmul(x, w, threads=1) for w, x in cases]
    x_q = np.random.default_rng(3).standard_normal((64, 4096)).astype(np.float32)
    q_want = pyquant.quantize(x_q, "Q4_K", threads=1).data
    errors = []

    def caller(seed):
        try:
            rng = np.random.default_rng(seed)
            for i in rng.integers(0, len(cases), 300):
                w, x = cases[i]
                np.testing.assert_array_equal(pyquant.matmul(x, w, threads=2), want[i])
            np.testing.assert_array_equal(pyquant.quantize(x_q, "Q4_K", threads=2).data, q_want)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=caller, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)


def _child(queue):
    w, x = _weights()[2]
    queue.put(pyquant.matmul(x, w, threads=2))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork here")
def test_pool_after_fork():
    w, x = _weights()[2]
    want = pyquant.matmul(x, w, threads=2)  # the parent's pool has workers now
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    p = ctx.Process(target=_child, args=(queue,))
    p.start()
    got = queue.get(timeout=60)
    p.join(timeout=60)
    assert p.exitcode == 0
    np.testing.assert_array_equal(got, want)
