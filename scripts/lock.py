"""The dependency lock: `make lock` writes it, `make install` checks it before installing from it.

Two files a platform, each pinning every package with its hashes. requirements/lock-<platform>.txt is made by
`uv pip compile --generate-hashes` from pyproject.toml's dependencies and its `dev` extra: `make test` installs it.
requirements/serve-<platform>.txt is the part of it the server needs at run time (pyproject's dependencies, what
they need, and the build backend of the editable install), with the same pins: `make serve` installs only that. Torch is
overridden per platform: the CPU build on Linux (the default PyPI wheel there is a multi-GB CUDA build), the
PyPI wheel on macOS. The first line of each lock records a digest of the inputs it was compiled from, so a
change to pyproject.toml's dependencies that was not followed by `make lock` stops the install with a clear
message instead of installing something nobody resolved.

`wheels` writes the requirements the GPU machine needs as wheels (it has its own torch, Triton, numpy and
transformers, and no internet): the server's runtime packages, pinned and hashed as the Linux lock pins them.

Usage: python scripts/lock.py compile [--uv PATH] | check PLATFORM | wheels OUTPUT
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
LOCK_DIR = ROOT / "requirements"
PYTHON_VERSION = "3.11"
DIGEST_PREFIX = "# inputs-sha256: "


@dataclass(frozen=True)
class Platform:
    name: str  # as the Makefile names it: <os>-<machine>
    uv_platform: str  # uv's --python-platform
    torch: str  # the torch requirement this platform installs
    find_links: tuple[str, ...] = ()  # where the torch build lives when PyPI does not carry it
    env: tuple[tuple[str, str], ...] = ()  # what uv reads of the target beyond --python-platform
    markers: tuple[tuple[str, str], ...] = ()  # the environment markers of pyproject's requirements see there


# The CPU build of torch is published on PyTorch's own index, not on PyPI. Where a copy of the wheel lies on
# disk (our CI machines keep one in /opt/wheels), the lock is made from that copy.
TORCH_CPU_LINKS = ("/opt/wheels",) if Path("/opt/wheels").is_dir() else ("https://download.pytorch.org/whl/cpu/torch/",)

PLATFORMS = {
    p.name: p
    for p in (
        Platform(
            "linux-x86_64",
            "x86_64-manylinux_2_35",
            "torch==2.13.0+cpu",
            TORCH_CPU_LINKS,
            markers=(("sys_platform", "linux"), ("platform_machine", "x86_64")),
        ),
        # torch 2.13's macOS wheels need macOS 14 or newer.
        Platform(
            "macos-arm64",
            "aarch64-apple-darwin",
            "torch==2.13.0",
            env=(("MACOSX_DEPLOYMENT_TARGET", "14.0"),),
            markers=(("sys_platform", "darwin"), ("platform_machine", "arm64")),
        ),
    )
}


def lock_path(platform: Platform) -> Path:
    return LOCK_DIR / f"lock-{platform.name}.txt"


def serve_lock_path(platform: Platform) -> Path:
    return LOCK_DIR / f"serve-{platform.name}.txt"


def inputs_digest(platform: Platform) -> str:
    """A digest of what the lock is compiled from: the dependency tables of pyproject.toml and the torch pin."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    inputs = {
        "requires-python": project.get("requires-python"),
        "dependencies": project.get("dependencies", []),
        "optional-dependencies": project.get("optional-dependencies", {}),
        "torch": platform.torch,
        "python": PYTHON_VERSION,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def recorded_digest(path: Path) -> str | None:
    if not path.exists():
        return None
    first_line = path.read_text().splitlines()[0] if path.stat().st_size else ""
    return first_line.removeprefix(DIGEST_PREFIX) if first_line.startswith(DIGEST_PREFIX) else None


def compile_lock(platform: Platform, uv: str) -> None:
    path = lock_path(platform)
    with tempfile.TemporaryDirectory() as tmp:
        override = Path(tmp) / "torch.txt"
        override.write_text(platform.torch + "\n")
        compiled = Path(tmp) / "lock.txt"
        if path.exists():  # start from the committed pins, so `make lock` changes only what it must
            compiled.write_text(path.read_text())
        command = [
            uv, "pip", "compile", str(PYPROJECT), "--extra", "dev", "--generate-hashes", "--no-header",
            "--python-version", PYTHON_VERSION, "--python-platform", platform.uv_platform,
            "--override", str(override), "--quiet", "-o", str(compiled),
        ]  # fmt: skip
        for link in platform.find_links:
            command += ["--find-links", link]
        subprocess.run(command, check=True, cwd=ROOT, env={**os.environ, **dict(platform.env)})
        body = compiled.read_text()
    # uv records where the override came from as a temporary path; name the script instead.
    body = body.replace(f"--override {override}", "scripts/lock.py (torch)")
    header = (
        f"{DIGEST_PREFIX}{inputs_digest(platform)}\n"
        f"# The locked dependencies for {platform.name}, Python {PYTHON_VERSION}. Made by `make lock`; do not edit.\n"
    )
    LOCK_DIR.mkdir(exist_ok=True)
    path.write_text(header + body.rstrip("\n") + "\n")
    print(f"wrote {path.relative_to(ROOT)}")
    write_serve_lock(platform)


# The editable install is built without isolation, so the server's venv needs the build backend too.
SERVE_BUILD_PACKAGES = frozenset({"setuptools"})


def write_serve_lock(platform: Platform) -> None:
    """The runtime part of the platform's lock, pins and hashes unchanged."""
    blocks = _lock_blocks(lock_path(platform))
    needed = _runtime_closure(blocks, platform, SERVE_BUILD_PACKAGES)
    path = serve_lock_path(platform)
    header = (
        f"{DIGEST_PREFIX}{inputs_digest(platform)}\n"
        f"# What the server needs at run time on {platform.name}, Python {PYTHON_VERSION}: the runtime part of\n"
        f"# {lock_path(platform).name}, with its pins. Made by `make lock`; do not edit.\n"
    )
    path.write_text(header + "\n".join(blocks[name][0] for name in sorted(needed)) + "\n")
    print(f"wrote {path.relative_to(ROOT)} ({len(needed)} of {len(blocks)} packages)")


def check_lock(platform: Platform) -> int:
    for path in (lock_path(platform), serve_lock_path(platform)):
        recorded = recorded_digest(path)
        if recorded is None:
            print(f"error: {path.relative_to(ROOT)} is missing: run `make lock`", file=sys.stderr)
            return 1
        if recorded != inputs_digest(platform):
            print(
                f"error: pyproject.toml's dependencies changed since {path.relative_to(ROOT)} was made.\n"
                "       Run `make lock` to resolve them again, and commit the lock with the change.",
                file=sys.stderr,
            )
            return 1
    return 0


# What the GPU machine brings itself, and the MLX backend it never runs: these and what only they need stay off
# the wheels it is sent.
GPU_MACHINE_PROVIDES = frozenset({"torch", "triton", "numpy", "mlx", "mlx-cpu"})


def _lock_blocks(path: Path) -> dict[str, tuple[str, set[str]]]:
    """name -> (its requirement with hashes, the packages that need it; "." for pyproject.toml itself)."""
    blocks: dict[str, tuple[str, set[str]]] = {}
    name, lines, parents = None, [], set()
    for line in path.read_text().splitlines() + [""]:
        if line and not line.startswith((" ", "#")) or not line:
            if name is not None:
                blocks[name] = ("\n".join(lines), parents)
            name, lines, parents = (line.split("==")[0].lower(), [line], set()) if line else (None, [], set())
        elif line.lstrip().startswith("--hash") or not line.lstrip().startswith("#"):
            lines.append(line)
        else:
            via = line.lstrip("# ").removeprefix("via").strip()
            if via:
                parents.add("." if via.startswith("tkr-embed") else via.split()[0].lower())
    return blocks


def _runtime_closure(
    blocks: dict[str, tuple[str, set[str]]],
    platform: Platform,
    roots: frozenset[str] = frozenset(),
    exclude: frozenset[str] = frozenset(),
) -> set[str]:
    """pyproject's dependencies for the platform (not the dev extra), the `roots`, and every locked package they
    need, less `exclude` and what only it needs."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    direct = {_requirement_name(r) for r in project["dependencies"] if _applies(r, platform)}
    needed: set[str] = set()
    changed = True
    while changed:
        changed = False
        for name, (_, parents) in blocks.items():
            if name in needed or name in exclude:
                continue
            if name in roots or ("." in parents and name in direct) or parents & needed:
                needed.add(name)
                changed = True
    return needed


def runtime_wheels(output: Path) -> None:
    """The server's runtime packages from the Linux lock, less what the GPU machine has, as a hashed requirements
    file for `pip download`."""
    linux = PLATFORMS["linux-x86_64"]
    needed = _runtime_closure(blocks := _lock_blocks(lock_path(linux)), linux, exclude=GPU_MACHINE_PROVIDES)
    output.write_text("\n".join(blocks[name][0] for name in sorted(needed)) + "\n")
    print(f"wrote {len(needed)} requirements to {output}")


def _applies(requirement: str, platform: Platform) -> bool:
    """Whether a requirement's environment marker holds on the platform (a dev extra's mlx[cpu] on Linux must not
    make the darwin-only mlx requirement a runtime one there)."""
    if ";" not in requirement:
        return True
    try:
        from packaging.markers import Marker
    except ImportError:  # `make install` runs this with the system Python, whose pip carries packaging
        from pip._vendor.packaging.markers import Marker
    environment = {
        "python_version": PYTHON_VERSION,
        "python_full_version": f"{PYTHON_VERSION}.0",
        **dict(platform.markers),
    }
    return Marker(requirement.split(";", 1)[1]).evaluate(environment)


def _requirement_name(requirement: str) -> str:
    for separator in "<>=!~;[ ":
        requirement = requirement.split(separator)[0]
    return requirement.strip().lower()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    compile_cmd = commands.add_parser("compile", help="write every platform's locks (test and serve)")
    compile_cmd.add_argument("--uv", default="uv", help="the uv executable")
    check_cmd = commands.add_parser("check", help="fail when pyproject.toml and a platform's lock disagree")
    check_cmd.add_argument("platform", choices=sorted(PLATFORMS))
    wheels_cmd = commands.add_parser("wheels", help="the GPU machine's requirements (the server's runtime packages)")
    wheels_cmd.add_argument("output", type=Path)
    args = parser.parse_args(argv)
    if args.command == "wheels":
        runtime_wheels(args.output)
        return 0
    if args.command == "compile":
        for platform in PLATFORMS.values():
            compile_lock(platform, args.uv)
        return 0
    return check_lock(PLATFORMS[args.platform])


if __name__ == "__main__":
    sys.exit(main())
