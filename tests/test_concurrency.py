"""Several Python threads calling relufrob at once (the GIL is released for
real problems) get exactly what one thread gets."""

import threading

import torch

import relufrob
from relufrob.testing import make_inputs

from helpers import assert_bitwise_equal

# Both CPU kernels: the blocked one (N > 256) and the small fused one.
PROBLEMS = [(1500, 64, 300), (600, 32, 48)]


def _work(X, W, Y, b):
    out = relufrob.grads(X, W, Y, bias=b)
    Wl = W.clone().requires_grad_(True)
    relufrob.loss(X, Wl, Y, bias=b).backward()
    return [*out, Wl.grad]


def test_threads_get_the_single_threaded_results_bitwise():
    cases = []
    for M, K, N in PROBLEMS:
        X, W, Y = make_inputs(M, K, N)
        cases.append((X, W, Y, torch.randn(N)))
    expected = [_work(*c) for c in cases]
    results, errors = {}, []

    def run(t):
        try:
            for i in range(3):
                for c, case in enumerate(cases):
                    results[(t, i, c)] = _work(*case)
        except Exception as exc:  # surfaced below, with the thread's name
            errors.append((t, exc))

    threads = [threading.Thread(target=run, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    assert not any(th.is_alive() for th in threads), "a thread did not finish"
    assert not errors, errors
    assert len(results) == 4 * 3 * len(cases)
    for (t, i, c), got in results.items():
        for g, e in zip(got, expected[c]):
            assert_bitwise_equal(g, e, f"thread {t}, round {i}, problem {PROBLEMS[c]}")
