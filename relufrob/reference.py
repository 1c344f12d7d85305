"""relufrob.reference: the pure-PyTorch reference, under the name it has always had.

It lives in relufrob.testing.reference (beside the parity rule); this name
keeps ``relufrob.reference.loss`` and ``from relufrob.reference import ...``
working.
"""

from .testing.reference import *  # noqa: F403
from .testing.reference import __all__  # noqa: F401
