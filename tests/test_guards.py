"""The rules that matter, enforced: lint and format (ruff) and the layering contracts (import-linter), as
pyproject.toml configures them. A failure prints the tool's report, which names the file and the rule."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False, timeout=300)


@pytest.mark.parametrize(
    "command",
    [("ruff", "check", "--no-cache", "."), ("ruff", "format", "--check", "--no-cache", ".")],
    ids=["lint", "format"],
)
def test_the_tree_passes_ruff(command: tuple[str, ...]) -> None:
    result = _run(str(BIN / command[0]), *command[1:])
    assert result.returncode == 0, f"`{' '.join(command)}` failed:\n{result.stdout}{result.stderr}"


def test_the_layering_contracts_hold() -> None:
    result = _run(str(BIN / "lint-imports"), "--no-cache")
    assert result.returncode == 0, f"an import breaks a layering rule:\n{result.stdout}{result.stderr}"
    assert "0 broken" in result.stdout
