"""How the relufrob ops plug into PyTorch, one module per subsystem.

The C++ extension (relufrob._C) defines the ops and their CPU, CUDA,
Autograd and Autocast kernels (csrc/). What PyTorch asks of Python lives
here:

* checks.py: the C++ argument checks in Python and in C++'s words, for the
  fake kernels and for calls the dispatcher refuses before C++ sees them;
* fake.py: the fake kernels (torch.compile, torch.export);
* vmap.py: the vmap rules (a batch of problems as one fused call);
* functorch.py: the Python autograd.Function relufrob.loss runs under
  torch.func transforms.

Importing this package loads the extension (registering torch.ops.relufrob.*)
and then the fake kernels and vmap rules, which need the ops to exist.
"""

from .. import _C  # noqa: F401  (registers torch.ops.relufrob.*: first)
from . import fake, vmap  # noqa: F401  (fake kernels register on import)

vmap.register()
