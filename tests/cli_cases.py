"""What tests/test_cli.py and tests/test_check.py share: running
`python -m relufrob` at a shell and reading the verdicts of a text report.

* ``run_cli(*args)`` runs `python -m relufrob ARGS...` in the repository;
* ``verdicts(text)`` maps each (quantity, method) of a report to its verdict;
* ``QUANTITIES`` and ``CANDIDATES`` are what the classic exercise judges, and
  by which methods; ``VERDICT`` matches one verdict line.
"""

import re

from helpers import run_python

QUANTITIES = ("f", "dW", "dX", "dY")
CANDIDATES = ("formulas", "relufrob")
VERDICT = re.compile(
    r"^(f|dW|dX|dY|db) +(formulas|relufrob) vs autograd: max\|Δ\| (\S+)  max rel (\S+)  "
    r"(MATCH|MISMATCH) \(rtol (\S+), atol (\S+)\)",
    re.M,
)


def run_cli(*args):
    return run_python("-m", "relufrob", *args, timeout=120)


def verdicts(text):
    """{(quantity, method): 'MATCH' | 'MISMATCH'} from a text report."""
    return {(m[0], m[1]): m[4] for m in VERDICT.findall(text)}
