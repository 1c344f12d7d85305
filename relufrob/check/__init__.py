"""The exercise behind ``python -m relufrob check``: the derivation of
f = ||act(X W + b) - Y||_F^2's gradients, verified three ways.

exercise.py draws the inputs and computes the loss and gradients by autograd,
by the closed-form formulas and by relufrob (:func:`run_check`); report.py
prints the verdicts as text or JSON.
"""

from .exercise import CLASSIC, EXERCISES, CheckResult, Variant, run_check
from .report import format_report, report_json

__all__ = [
    "CLASSIC",
    "EXERCISES",
    "CheckResult",
    "Variant",
    "format_report",
    "report_json",
    "run_check",
]
