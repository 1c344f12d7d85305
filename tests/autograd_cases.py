"""What tests/test_autograd.py and tests/test_compile.py share.

* ``grads_of(fn, inputs, requires)`` backpropagates fn(*inputs) to the inputs
  flagged in `requires`;
* ``GENERAL`` are the general form's cases (bias, no activation, no target),
  and ``general_case(M, K, N, **case)`` draws one's [X, W, Y, b] and its
  activation; ``_given(inputs)`` drops the inputs that are None.
"""

import torch

from relufrob.testing import make_inputs


def grads_of(fn, inputs, requires):
    """Gradients of fn(*inputs) for the inputs flagged in `requires` (None stays None)."""
    leaves = [
        None if t is None else t.detach().clone().requires_grad_(r)
        for t, r in zip(inputs, requires)
    ]
    fn(*leaves).backward()
    return [None if t is None else t.grad for t in leaves]


GENERAL = [
    {"bias": "row"},
    {"bias": "full"},
    {"bias": "row", "activation": None, "target": False},
    {"bias": None, "activation": None},
    {"bias": "full", "activation": None, "target": False},
]


def general_case(M, K, N, *, bias=None, activation="relu", target=True, dtype=torch.float64):
    X, W, Y = make_inputs(M, K, N, dtype=dtype)
    gen = torch.Generator().manual_seed(7)
    shape = {None: None, "row": (N,), "full": (*X.shape[:-1], N)}[bias]
    b = None if shape is None else torch.randn(shape, generator=gen).to(dtype)
    return [X, W, Y if target else None, b], activation


def _given(inputs):
    return [t for t in inputs if t is not None]
