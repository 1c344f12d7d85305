"""The package's architecture, held in place: import floors, a cheap
`import relufrob`, and the one seam for private torch names (relufrob._compat)."""

import ast
import os
import re
import subprocess
import sys

import pytest

from relufrob import _compat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "relufrob")

# Each module may import only from lower floors (docs/architecture.md).
FLOORS = {
    "relufrob._C": 0,
    "relufrob._version": 0,
    "relufrob._types": 0,
    "relufrob._compat": 0,
    "relufrob.testing": 1,
    "relufrob._library.checks": 1,
    "relufrob._library": 2,
    "relufrob.ops": 3,
    "relufrob.per_sample": 3,
    "relufrob.distributed": 4,
    "relufrob.check": 4,
    "relufrob.reference": 5,
    "relufrob.cli": 5,
    "relufrob.__main__": 6,
    "relufrob": 6,
}


def floor(module: str) -> int:
    """The floor of the longest FLOORS prefix of `module`."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        name = ".".join(parts[:n])
        if name in FLOORS:
            return FLOORS[name]
    raise AssertionError(f"{module} has no floor in FLOORS: add it (and to docs/architecture.md)")


def modules():
    for dirpath, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, ROOT)[: -len(".py")].replace(os.sep, ".")
                yield rel.removesuffix(".__init__"), path, f == "__init__.py"


def package_imports(module: str, path: str, is_package: bool):
    """The relufrob modules that `module` imports (absolute names)."""
    tree = ast.parse(open(path).read())
    here = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("relufrob"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                # "from . import x" imports the module x; "from .m import f" imports m.
                is_module = sub in FLOORS or any(m == sub for m, _, _ in modules())
                yield sub if is_module else target
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("relufrob"):
                    yield alias.name


MODULES = sorted(modules())


@pytest.mark.parametrize("module,path,is_package", MODULES, ids=[m for m, _, _ in MODULES])
def test_imports_only_go_down(module, path, is_package):
    mine = floor(module)
    for target in package_imports(module, path, is_package):
        if target == module or target.startswith(module + "."):
            continue  # a package importing its own modules
        # Within one floor, modules of the same subpackage may import each other.
        same_package = target.split(".")[:2] == module.split(".")[:2]
        assert floor(target) < mine or (same_package and floor(target) == mine), (
            f"{module} (floor {mine}) imports {target} (floor {floor(target)})"
        )


def test_lazy_modules_import_first_in_a_fresh_interpreter():
    # `import relufrob.x.y` runs relufrob/__init__.py first, which fixes the
    # order of everything it imports; the modules it does not import (the
    # distributed and teaching code) are each imported first on their own,
    # to catch an order that only works because something else ran first.
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, relufrob; print(' '.join(sys.modules))"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout.split()
    lazy = [m for m, _, _ in MODULES if m not in loaded and m != "relufrob.__main__"]
    assert "relufrob.distributed" in lazy and "relufrob.check" in lazy
    procs = {m: subprocess.Popen([sys.executable, "-c", f"import {m}"]) for m in lazy}
    failed = [m for m, p in procs.items() if p.wait(timeout=300) != 0]
    assert not failed, f"these modules fail when imported first: {failed}"


def test_import_relufrob_stays_cheap():
    code = (
        "import sys, relufrob; "
        "print(sorted(m for m in sys.modules if m.startswith(('relufrob.distributed', "
        "'relufrob.check', 'torch.distributed.tensor'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120
    )
    assert out.stdout.strip() == "[]"


def test_public_names_still_resolve():
    import relufrob

    for name in ("grads", "loss", "Grads", "GradsWithBias", "build_info", "cpu_kernels"):
        assert callable(getattr(relufrob, name))
    assert relufrob.reference.loss is relufrob.testing.reference.loss
    assert relufrob.distributed.grads.__module__ == "relufrob.distributed"
    assert relufrob.check.run_check.__module__ == "relufrob.check.exercise"


@pytest.mark.parametrize("entry", _compat.ENTRIES, ids=[e.name for e in _compat.ENTRIES])
def test_every_private_torch_name_exists_in_this_torch(entry):
    # When a torch release drops one, this names the entry that broke.
    assert _compat.require(entry.name) is not None, entry.name


def test_a_missing_private_name_fails_naming_its_entry(monkeypatch):
    entry = _compat.Entry("gone", "torch._C:_relufrob_no_such_name", "a test of the message")
    monkeypatch.setattr(_compat, "_BY_NAME", {**_compat._BY_NAME, "gone": entry})
    with pytest.raises(RuntimeError, match="lacks torch._C._relufrob_no_such_name.*entry 'gone'"):
        _compat.require("gone")


PRIVATE = re.compile(r"\btorch\.(?:_[A-Za-z]|[A-Za-z_.]*\._[A-Za-z])")


@pytest.mark.parametrize("module,path,is_package", MODULES, ids=[m for m, _, _ in MODULES])
def test_private_torch_names_only_in_compat(module, path, is_package):
    if module == "relufrob._compat":
        return
    code = [
        line
        for line in open(path).read().splitlines()
        if not line.lstrip().startswith("#") and "torch.__version__" not in line
    ]
    found = [line.strip() for line in code if PRIVATE.search(line)]
    assert not found, f"{module} uses private torch names outside relufrob._compat: {found}"
