"""Run a script or module with some module constants changed: the A/B runs of the device scripts.

    python bench/with_patch.py tkr_embed.backends.torch.kernels.pdl.PDL_ON_CUDA=False -- bench/gpu_profile_step.py --batch 1
    python bench/with_patch.py a.b.NAME=VALUE [...] -- -m tkr_embed.cli bench --model gpt-oss-20b ...

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


def source_variant(module, name: str, edits: list[tuple[str, str]], source: str | None = None):
    """A copy of `module` (a kernel module: its Triton kernels compile anew) with each (old, new) replaced in its
    source (or in `source`), imported beside it under a name made from `name`; the file is removed again."""
    source = source or Path(module.__file__).read_text()
    for old, new in edits:
        assert old in source, old
        source = source.replace(old, new)
    path = Path(module.__file__).with_name(f"_probe_{abs(hash(name))}.py")
    path.write_text(source)
    try:
        return importlib.import_module(f"{module.__name__.rpartition('.')[0]}.{path.stem}")
    finally:
        path.unlink()


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
    run_target(argv[split + 1:])


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
