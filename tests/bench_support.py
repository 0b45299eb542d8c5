"""Import a script of bench/ (not a package) as a module, for the tests of the benchmark tools."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load_bench_module(name: str) -> ModuleType:
    """bench/<name>.py as module `tkr_bench_<name>` (registered in sys.modules: dataclasses look it up)."""
    spec = importlib.util.spec_from_file_location(f"tkr_bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
