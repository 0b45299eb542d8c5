"""The replicas' server processes: free ports, what /proc says of a process, launching a server on a replica's
port, waiting for it to be healthy or gone, killing it, and stopping it with SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_NAME = "demo"
MAX_BODY_BYTES = 1024 * 1024  # server.max_body_bytes for the replicas: an oversized body costs 1 MiB, not 4
HEADER_TIMEOUT_S = 5.0  # server.header_timeout_s: a slow client holds a worker this long, not the default 10 s
GRACEFUL_SHUTDOWN_S = 10.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def children(pid: int) -> list[int]:
    """The live child processes of `pid` (Linux /proc)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def is_alive(pid: int) -> bool:
    """Running (a zombie counts as gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


def rss_kib(pid: int) -> int | None:
    """VmRSS from /proc (psutil is not a dependency); None once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def engine_pid_of(server_pid: int) -> int | None:
    """The engine child (spawned by multiprocessing), not its resource tracker."""
    for pid in children(server_pid):
        line = command_line(pid)
        if "multiprocessing" in line and "resource_tracker" not in line:
            return pid
    return None


@dataclass
class Incarnation:
    """One server process of a replica, from start to exit."""

    pid: int
    started_s: float  # seconds since the load began (negative: before it)
    log_path: Path
    engine_pid: int | None = None
    ended_s: float | None = None
    exit_code: int | None = None
    ended_by: str | None = None  # "kill_server", "kill_engine" or "sigterm"
    killed_s: float | None = None  # when the signal was sent
    orphaned_engine: bool = False  # its engine child outlived it
    rss: dict[int, list[tuple[float, int]]] = field(default_factory=dict)  # pid -> [(t, KiB)]


@dataclass
class Replica:
    name: str
    port: int
    env: dict[str, str]
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    incarnations: list[Incarnation] = field(default_factory=list)
    up: bool = False  # healthy and not being killed: connection errors to it are not expected
    epoch: int = 0  # bumped at each kill; a request that saw it change ran into the kill

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def current(self) -> Incarnation:
        return self.incarnations[-1]

    def log_tail(self) -> str:
        path = self.current.log_path
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def replica_env(port: int, model_dir: Path, data_dir: Path, master_key: str, secret_key: str) -> dict[str, str]:
    """Production mode with the env names the tests use (tests/api/server_process.py, tests/gateway)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENERATION_")}
    env.update(
        {
            "GENERATION_ENV": "production",
            "GENERATION_API_KEY": master_key,
            "GENERATION_SECRET_KEY": secret_key,  # one for all replicas: a key's stored HMAC must match on each
            "GENERATION_MODEL_PATH": str(model_dir),
            "GENERATION_MODEL_NAME": MODEL_NAME,
            "GENERATION_DEVICE": "cpu",
            "GENERATION_HOST": "127.0.0.1",
            "GENERATION_PORT": str(port),
            "GENERATION_DATA_DIR": str(data_dir),
            "GENERATION_DATABASE_URL": f"sqlite+aiosqlite:///{data_dir / 'soak.db'}",
            "GENERATION_LOG_LEVEL": "warning",
            "GENERATION_RATE_LIMIT_ENABLED": "true",
            "GENERATION_RATE_LIMIT_RPM": "100000",
            "GENERATION_RATE_LIMIT__BURST": "1000",
            "GENERATION_RATE_LIMIT__REQUESTS_PER_HOUR": "1000000",
            "GENERATION_RATE_LIMIT__REQUESTS_PER_DAY": "10000000",
            "GENERATION_CACHE_ENABLED": "true",
            "GENERATION_ENGINE__MAX_NUM_SEQS": "8",
            "GENERATION_ENGINE__MAX_WAITING": "64",
            "GENERATION_ENGINE__KV_CACHE_BLOCKS": "512",
            "GENERATION_SERVER__MAX_BODY_BYTES": str(MAX_BODY_BYTES),
            "GENERATION_SERVER__HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
            "GENERATION_SERVER__GRACEFUL_SHUTDOWN_S": str(GRACEFUL_SHUTDOWN_S),
            "PYTHONPATH": str(REPO_ROOT),
        }
    )
    return env


def launch(replica: Replica, now_s: float) -> None:
    """A new server process on the replica's port, in a session of its own (as a service manager starts it)."""
    log_file = replica.workdir / f"{replica.name}.{len(replica.incarnations)}.stderr"
    with log_file.open("wb") as sink:
        replica.process = subprocess.Popen(
            [sys.executable, "-m", "tkr_embed.api.server"],
            cwd=replica.workdir,
            env=replica.env,
            stdout=sink,
            stderr=sink,
            start_new_session=True,
        )
    replica.incarnations.append(Incarnation(pid=replica.process.pid, started_s=now_s, log_path=log_file))


async def wait_healthy(replica: Replica, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=5) as client:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(replica.url + "/health")).status_code == 200:
                    replica.current.engine_pid = engine_pid_of(replica.current.pid)
                    replica.up = True
                    return
            assert replica.process is not None
            if replica.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{replica.name} did not become healthy:\n{replica.log_tail()}")
            await asyncio.sleep(0.2)


async def wait_exit(process: subprocess.Popen[bytes], timeout_s: float) -> int | None:
    """The exit status, or None if it is still running after `timeout_s` (polled: the event loop keeps serving)."""
    deadline = time.monotonic() + timeout_s
    while process.poll() is None:
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(0.1)
    return process.returncode


async def wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while is_alive(pid):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


def kill_tree(process: subprocess.Popen[bytes]) -> None:
    """Last resort on the way out: the server and its children (all started by this script)."""
    if process.poll() is None:
        for pid in children(process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.kill()
        process.wait()


@dataclass
class ShutdownResult:
    replica: str
    exit_code: int | None
    children_left: list[int]


async def stop_gracefully(replica: Replica, now_s: float) -> ShutdownResult:
    """SIGTERM: the server drains and exits 0 with no child left."""
    process = replica.process
    assert process is not None
    watched = children(process.pid)
    replica.up = False
    replica.current.ended_by = "sigterm"
    process.send_signal(signal.SIGTERM)
    code = await wait_exit(process, GRACEFUL_SHUTDOWN_S + 60)
    left = [pid for pid in watched if not await wait_gone(pid, 5)]
    replica.current.ended_s, replica.current.exit_code = now_s, code
    if code is None or left:
        kill_tree(process)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return ShutdownResult(replica.name, code, left)
