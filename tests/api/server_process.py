"""The real server as its own process (`python -m tkr_embed.api.server`), for tests of what only a process shows:
signals, exit statuses, child processes, connections. A uniquely named module (not conftest) so that the whole
suite can import it in one pytest run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
# The /proc helpers are the chaos tool's (bench/chaos/processes.py): one copy for the tests and the tool.
sys.path.insert(0, str(REPO_ROOT / "bench"))

from chaos.processes import children, command_line, free_port, is_alive  # noqa: E402

__all__ = ["ServerProcess", "children", "command_line", "demo_env", "free_port", "is_alive", "server_process"]


@dataclass
class ServerProcess:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def engine_pid(self) -> int:
        """The engine's child process (spawned by multiprocessing; not its resource tracker)."""
        for pid in children(self.pid):
            line = command_line(pid)
            if "multiprocessing" in line and "resource_tracker" not in line:
                return pid
        raise AssertionError(f"no engine process among {children(self.pid)}")

    def wait_healthy(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not become healthy:\n{self.log()[-4000:]}")
            time.sleep(0.1)

    def wait_exit(self, timeout_s: float) -> int:
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the server did not exit within {timeout_s} s:\n{self.log()[-4000:]}") from None


def demo_env(demo_model_dir: Path, data_dir: Path, port: int, **settings: str) -> dict[str, str]:
    """The environment of a development server (no auth) on the demo checkpoint, on CPU; `settings` adds
    GENERATION_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENERATION_")}
    env.update(
        {
            "GENERATION_ENV": "development",
            "GENERATION_AUTH_ENABLED": "false",
            "GENERATION_MODEL_PATH": str(demo_model_dir),
            "GENERATION_DEVICE": "cpu",
            "GENERATION_PORT": str(port),
            "GENERATION_DATA_DIR": str(data_dir),
            "GENERATION_LOG_LEVEL": "info",
            "GENERATION_ENGINE__KV_CACHE_BLOCKS": "512",
            "PYTHONPATH": str(REPO_ROOT),
            **settings,
        }
    )
    return env


@contextmanager
def server_process(
    workdir: Path, env: dict[str, str], port: int, command: list[str] | None = None
) -> Iterator[ServerProcess]:
    """`python -m tkr_embed.api.server` (or `command`, e.g. `tkr-embed serve` with flags) in `workdir`; killed
    (with its children) if the test leaves it running."""
    log_path = workdir / "server.stderr"
    with log_path.open("wb") as log:
        # A session of its own, as a service manager starts it: a signal can reach its whole process group.
        process = subprocess.Popen(
            command or [sys.executable, "-m", "tkr_embed.api.server"],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    server = ServerProcess(f"http://127.0.0.1:{port}", process, log_path)
    try:
        yield server
    finally:
        if process.poll() is None:
            for pid in children(process.pid):
                os.kill(pid, signal.SIGKILL)
            process.kill()
            process.wait()


@contextmanager
def healthy_demo_server(demo_model_dir: Path, workdir: Path, **settings: str) -> Iterator[ServerProcess]:
    """The server on the demo checkpoint, in `workdir` on a free port (`settings`: GENERATION_* variables), healthy
    before the body runs."""
    port = free_port()
    with server_process(workdir, demo_env(demo_model_dir, workdir / "data", port, **settings), port) as running:
        running.wait_healthy()
        yield running
