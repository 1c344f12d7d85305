"""tests/soak.py (`make soak`) runs every path and judges its sample: a few
seconds of it here, so that the soak cannot rot between its long runs. The
RSS figure needs minutes of warm-up to mean anything, so only the calls'
outcomes are held here; docs/soak.md has a full run's figures."""

import re

from helpers import run_python


def test_a_short_soak_calls_every_path_without_a_mismatch():
    run = run_python(
        "tests/soak.py", "--seconds", "6", "--warmup", "1", "2", "--judge-every", "4", timeout=300
    )
    out = run.stdout
    assert "calls: " in out, run.stdout[-3000:] + run.stderr[-3000:]
    total, bad = map(int, re.search(r"calls: (\d+), mismatches or errors: (\d+)", out).groups())
    assert total > 100 and bad == 0, out[-3000:]
    for path in ("grads", "autocast-loss-backward", "vmap-loss", "func-grad", "clipped-grads"):
        row = re.search(rf"^\| {path} \| (\d+) / (\d+) / (\d+)", out, re.M)
        assert row and int(row.group(1)) > 0 and int(row.group(2)) > 0, (path, out[-3000:])
