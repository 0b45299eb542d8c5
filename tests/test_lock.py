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


def _pins(lock: Path) -> dict[str, str]:
    """name -> the requirement block (its pin and hashes) of a lock file."""
    blocks: dict[str, str] = {}
    name = None
    for line in lock.read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            name = line.split("==")[0]
            blocks[name] = line
        elif name and line.lstrip().startswith("--hash"):
            blocks[name] += "\n" + line
    return blocks


def test_the_serve_lock_is_the_runtime_part_of_the_full_lock_with_the_same_pins() -> None:
    for platform in ("linux-x86_64", "macos-arm64"):
        full = _pins(ROOT / "requirements" / f"lock-{platform}.txt")
        serve = _pins(ROOT / "requirements" / f"serve-{platform}.txt")
        assert serve and all(full[name] == block for name, block in serve.items()), platform
        # what the server runs on and builds its editable install with ...
        assert {"torch", "fastapi", "uvicorn", "openai-harmony", "safetensors", "setuptools"} <= serve.keys()
        # ... and none of the test toolchain
        assert not {"pytest", "transformers", "triton", "lm-eval", "openai", "ruff", "uv"} & serve.keys(), platform
    assert "mlx" in _pins(ROOT / "requirements" / "serve-macos-arm64.txt")
    assert "mlx" not in _pins(ROOT / "requirements" / "serve-linux-x86_64.txt")  # the tests' CPU build only


def test_a_stale_serve_lock_stops_the_install_too(tmp_path: Path) -> None:
    tree = _copy_of_the_tree(tmp_path)
    serve = tree / "requirements" / "serve-linux-x86_64.txt"
    serve.write_text("# inputs-sha256: 0\n" + serve.read_text().split("\n", 1)[1])
    result = _check(tree)
    assert result.returncode == 1
    assert "since requirements/serve-linux-x86_64.txt was made" in result.stderr
