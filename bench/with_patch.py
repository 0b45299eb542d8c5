"""Run a script or module with some module constants changed: an A/B run of one switch, same machine.

    python bench/with_patch.py tkr_embed.backends.torch.kernels.pdl.PDL_ON_CUDA=False -- -m tkr_embed.cli bench ...
    python bench/with_patch.py a.b.NAME=VALUE [...] -- script.py args...

Each NAME=VALUE sets a module attribute (VALUE is a Python literal) before the target starts, so it
applies wherever the code reads the constant at call time (the kernel switches do).
"""

from __future__ import annotations

import ast
import importlib
import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def apply(assignment: str) -> None:
    name, _, value = assignment.partition("=")
    module_name, _, attribute = name.rpartition(".")
    module = importlib.import_module(module_name)
    if not hasattr(module, attribute):
        raise SystemExit(f"{module_name} has no {attribute}")
    setattr(module, attribute, ast.literal_eval(value))


def main(argv: list[str]) -> None:
    if "--" not in argv:
        raise SystemExit(__doc__)
    split = argv.index("--")
    for assignment in argv[:split]:
        apply(assignment)
    run_target(argv[split + 1 :])


def run_target(target: list[str]) -> None:
    """Run `-m module args...` or `script args...` as __main__ with those arguments."""
    if target[:1] == ["-m"]:
        sys.argv = [target[1], *target[2:]]
        runpy.run_module(target[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = target
        runpy.run_path(target[0], run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
