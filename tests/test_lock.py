"""The dependency lock: `make install` refuses to install when pyproject.toml's dependencies changed since the lock
was made, and says how to fix it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _check(tree: Path, platform: str = "linux-x86_64") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(tree / "scripts" / "lock.py"), "check", platform],
        capture_output=True,
        text=True,
        check=False,
    )


def _copy_of_the_tree(tmp_path: Path) -> Path:
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "lock.py", tmp_path / "scripts" / "lock.py")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(ROOT / "requirements", tmp_path / "requirements")
    return tmp_path


def test_the_committed_locks_match_pyproject() -> None:
    for platform in ("linux-x86_64", "macos-arm64"):
        result = _check(ROOT, platform)
        assert result.returncode == 0, result.stderr


def test_a_dependency_added_without_make_lock_stops_the_install_with_a_clear_message(tmp_path: Path) -> None:
    tree = _copy_of_the_tree(tmp_path)
    pyproject = tree / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('  "httpx>=0.27",\n', '  "httpx>=0.27",\n  "rich>=13",\n', 1))
    result = _check(tree)
    assert result.returncode == 1
    assert "pyproject.toml's dependencies changed since requirements/lock-linux-x86_64.txt was made" in result.stderr
    assert "make lock" in result.stderr


def test_a_change_outside_the_dependencies_keeps_the_lock(tmp_path: Path) -> None:
    tree = _copy_of_the_tree(tmp_path)
    pyproject = tree / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("line-length = 120", "line-length = 119"))
    assert _check(tree).returncode == 0


def test_every_locked_package_is_pinned_with_hashes() -> None:
    for lock in (ROOT / "requirements").glob("lock-*.txt"):
        lines = lock.read_text().splitlines()
        pins = [line for line in lines if line and not line.startswith((" ", "#"))]
        assert pins and all("==" in pin and pin.endswith("\\") for pin in pins), lock.name
        assert any(line.startswith("torch==2.13.0") for line in pins)
    linux = (ROOT / "requirements" / "lock-linux-x86_64.txt").read_text()
    assert "torch==2.13.0+cpu" in linux and "nvidia-" not in linux  # the CPU build, never CUDA's
