"""relufrob.testing: the ground truth relufrob is held to, for your tests as for ours.

As torch.testing is for PyTorch: the pure-PyTorch reference of the loss and
its gradients (relufrob.testing.reference), the inputs the classic exercise
draws, and the one parity rule that says how closely a result must agree
(relufrob.testing.tolerance). It imports torch and relufrob's result types
only, never the kernels it judges.

    from relufrob.testing import autograd_grads, make_inputs, parity_tolerance
"""

from .._types import FLOAT_DTYPES
from . import reference, tolerance
from .reference import FORMULAS, autograd_grads, formula_grads, formulas, make_inputs
from .tolerance import ASSERT_CLOSE_DEFAULTS, Comparison, compare, parity_tolerance

__all__ = [
    "ASSERT_CLOSE_DEFAULTS",
    "FLOAT_DTYPES",
    "FORMULAS",
    "Comparison",
    "autograd_grads",
    "compare",
    "formula_grads",
    "formulas",
    "make_inputs",
    "parity_tolerance",
    "reference",
    "tolerance",
]
