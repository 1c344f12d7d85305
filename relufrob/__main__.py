"""``python -m relufrob check`` / ``python -m relufrob info``; see relufrob.cli."""

import os
import sys

from .cli import main

if __name__ == "__main__":
    if hasattr(sys.stdout, "reconfigure"):  # 'Δ' on a terminal that cannot show it
        sys.stdout.reconfigure(errors="replace")
    try:
        status = main()
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. piped into `head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = 1
    sys.exit(status)
