"""Chaos and soak: two production-like replicas on the demo checkpoint, a mixed load from several keys, and a
replica killed and restarted every minute or two; at the end, checks that nothing leaked, froze or was lost.

    .venv/bin/python bench/chaos_soak.py --seconds 600 > /tmp/soak.json

Localhost only, on CPU, bounded in time (`--seconds` of load, plus start-up and shutdown). The report is one JSON
object on stdout (progress goes to stderr); the exit status is 1 when a check fails.

What it does:
- writes the demo checkpoint once, then starts two `python -m tkr_embed.api.server` replicas in production mode
  (auth with a generated master key, rate limits with generous limits, the response cache), each on its own port,
  sharing one SQLite database in one data folder;
- creates API keys through `POST /admin/api-keys` and sends, from a bounded pool of workers, a mix of normal,
  streaming, cached, cancelled, oversized, malformed and slow requests, all with small `max_tokens`;
- every 60-120 s SIGKILLs one replica's server process or its engine child (alternating) and starts a new server
  on the same port once the old one is gone;
- at the end stops the replicas with SIGTERM and checks: no 5xx but the documented 503s, every accepted request
  completed or ended with a terminal error event, usage rows match what the clients saw, the KV pool is full
  again, and RSS is flat over the last half of the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # tkr_embed's demo checkpoint writer, run from a checkout as the servers are
MODEL_NAME = "demo"

# The 503 codes the server documents (README, "Shutdown and failures" and admission); any other 5xx is a bug.
DOCUMENTED_503_CODES = frozenset({"engine_dead", "draining", "restarting", "server_overloaded", "engine_unavailable"})
MALFORMED_STATUSES = frozenset({400, 413, 415, 422})
MAX_BODY_BYTES = 1024 * 1024  # server.max_body_bytes for the replicas: an oversized body costs 1 MiB, not 4
MAX_INPUT_ITEMS = 2048  # server.max_input_items (the default)
HEADER_TIMEOUT_S = 5.0  # server.header_timeout_s: a slow client holds a worker this long, not the default 10 s
GRACEFUL_SHUTDOWN_S = 10.0
USAGE_FLUSH_RISK_S = 2.0  # usage is buffered for 0.5 s: a SIGKILL loses what finished this shortly before it
RSS_SAMPLE_S = 5.0
RSS_TOLERANCE = 0.10
RSS_LEVEL_SAMPLES = 5  # a level is the median of this many samples (25 s): one transient peak is not a level
WORKERS = 8
HTTP_TIMEOUT_S = 120.0  # a normal request on a busy 2-core machine; a hang shows as a timeout, not as a stall


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------- processes


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


# ---------------------------------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class ApiKey:
    name: str
    key_id: str
    secret: str


@dataclass
class RequestRecord:
    """What one client request saw."""

    kind: str  # normal, stream, cached, cancelled, oversized, malformed, slow
    route: str
    key: str  # the key's name
    replica: str
    incarnation: int
    started_s: float
    ended_s: float = 0.0
    status: int | None = None  # None: no status line received
    code: str | None = None  # the error code of a non-2xx answer
    # completed | terminal_error | unterminated | rejected | cancelled | cut | refused_down | cut_by_kill |
    # transport_error
    outcome: str = ""
    kill_kind: str | None = None  # the kill this request ran into, if any
    detail: str = ""

    @property
    def accepted(self) -> bool:
        return self.status is not None and 200 <= self.status < 300 and self.kind != "cancelled"


@dataclass(frozen=True)
class Target:
    replica: Replica
    epoch: int
    incarnation: int


def chat_body(stream: bool, rng: random.Random, temperature: float = 0.7) -> dict[str, Any]:
    topic = rng.choice(["the sea", "a cat", "bread", "rain", "numbers", "a bridge"])
    return {
        "model": MODEL_NAME,
        "messages": [{"role": "user", "content": f"Say something about {topic}."}],
        "max_tokens": rng.randint(8, 32),
        "temperature": temperature,
        "stream": stream,
    }


def normal_request(rng: random.Random, stream: bool) -> tuple[str, dict[str, Any]]:
    """One generation request on a route chosen at random: OpenAI chat/completions/responses or native."""
    max_tokens = rng.randint(8, 32)
    route = rng.choice(["/v1/chat/completions", "/v1/completions", "/v1/responses", "native"])
    if route == "/v1/chat/completions":
        return route, chat_body(stream, rng)
    if route == "/v1/completions":
        return route, {"model": MODEL_NAME, "prompt": "Once upon a time", "max_tokens": max_tokens, "stream": stream}
    if route == "/v1/responses":
        return route, {
            "model": MODEL_NAME,
            "input": "Tell me a story.",
            "max_output_tokens": max_tokens,
            "stream": stream,
        }
    if stream:
        return "/stream", {"text": "Tell me a story.", "max_tokens": max_tokens}
    if rng.random() < 0.5:
        return "/generate", {"text": "Tell me a story.", "max_tokens": max_tokens}
    return "/chat", {"messages": [{"role": "user", "content": "Hello!"}], "max_tokens": max_tokens}


def oversized_request(rng: random.Random) -> tuple[str, bytes, frozenset[int]]:
    """A body over server.max_body_bytes (413), or one item too many in a Responses input (400)."""
    if rng.random() < 0.5:
        body = chat_body(False, rng)
        body["messages"][0]["content"] = "x" * (MAX_BODY_BYTES + 1024)
        return "/v1/chat/completions", json.dumps(body).encode(), frozenset({413})
    items = [{"role": "user", "content": "hi"}] * (MAX_INPUT_ITEMS + 1)
    body = {"model": MODEL_NAME, "input": items, "max_output_tokens": 8}
    return "/v1/responses", json.dumps(body).encode(), frozenset({400, 413})


def malformed_request(rng: random.Random) -> tuple[str, bytes]:
    """Bad JSON, a wrong type, or nesting far deeper than any real request."""
    choice = rng.randrange(4)
    if choice == 0:
        return "/v1/chat/completions", b'{"model": "demo", "messages": [{"role": "user", "content": "hi"'
    if choice == 1:
        body = {"model": MODEL_NAME, "messages": "hi", "max_tokens": "many"}
        return "/v1/chat/completions", json.dumps(body).encode()
    if choice == 2:
        return "/v1/responses", b'{"model": "demo", "input": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    return "/generate", json.dumps({"text": 12, "max_tokens": -3}).encode()


def error_code(response_body: bytes) -> str | None:
    try:
        error = json.loads(response_body).get("error")
    except (ValueError, AttributeError):
        return None
    return error.get("code") if isinstance(error, dict) else None


class StreamWatch:
    """Reads an SSE stream to the end: did it finish ([DONE] or a Responses terminal event), with an error?"""

    RESPONSES_DONE = frozenset({"response.completed", "response.incomplete"})
    RESPONSES_FAILED = frozenset({"response.failed", "error"})

    def __init__(self) -> None:
        self.finished = False
        self.error = False

    def feed(self, line: str) -> None:
        if line.startswith("event: "):
            name = line.removeprefix("event: ").strip()
            self.finished |= name in self.RESPONSES_DONE or name in self.RESPONSES_FAILED
            self.error |= name in self.RESPONSES_FAILED
        elif line.startswith("data: "):
            data = line.removeprefix("data: ").strip()
            if data == "[DONE]":
                self.finished = True
            elif data.startswith('{"error"'):
                self.error = True


class LoadGenerator:
    """Workers sending the mix; each request picks a key and a replica, and its record says what it saw."""

    # Relative weights of the kinds; cancellations go to their own key (see `key_for`).
    MIX = {"normal": 34, "stream": 30, "cached": 6, "cancelled": 12, "oversized": 6, "malformed": 9, "slow": 3}

    def __init__(self, replicas: list[Replica], keys: list[ApiKey], cancel_key: ApiKey, seed: int) -> None:
        self.replicas = replicas
        self.keys = keys
        self.cancel_key = cancel_key
        self.rng = random.Random(seed)
        self.records: list[RequestRecord] = []
        self.t0 = time.monotonic()
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(HTTP_TIMEOUT_S, connect=5),
            limits=httpx.Limits(max_connections=WORKERS * 2, max_keepalive_connections=WORKERS),
        )

    def now_s(self) -> float:
        return time.monotonic() - self.t0

    def key_for(self, kind: str) -> ApiKey:
        # Whether a cancelled request is billed depends on whether the engine had produced a token when the client
        # left, which the client cannot see; on a key of their own they leave every other key's usage exact.
        return self.cancel_key if kind == "cancelled" else self.rng.choice(self.keys)

    def pick_target(self) -> Target:
        # Mostly a replica that is up (as a load balancer would), but now and then a down one, so that requests
        # meet the kill and the restart too.
        live = [replica for replica in self.replicas if replica.up]
        replica = self.rng.choice(live if live and self.rng.random() < 0.9 else self.replicas)
        return Target(replica, replica.epoch, len(replica.incarnations))

    async def run(self, deadline_s: float) -> None:
        async def worker() -> None:
            while self.now_s() < deadline_s:
                await self.one()

        await asyncio.gather(*(worker() for _ in range(WORKERS)))
        await self.client.aclose()

    async def one(self) -> None:
        kind = self.rng.choices(list(self.MIX), weights=list(self.MIX.values()))[0]
        key, target = self.key_for(kind), self.pick_target()
        record = RequestRecord(kind, "", key.name, target.replica.name, target.incarnation, self.now_s())
        try:
            await self.send(kind, key, target, record)
        except httpx.ConnectError as exc:
            record.outcome, record.detail = "refused", type(exc).__name__
        except (httpx.TransportError, OSError, asyncio.IncompleteReadError) as exc:
            record.outcome, record.detail = "transport_error", f"{type(exc).__name__}: {exc}"[:200]
        record.ended_s = self.now_s()
        self.attribute_to_kill(record, target)
        if record.kind == "oversized" and record.outcome == "transport_error":
            # The server answered before reading the body and closed with the rest unread: the kernel resets the
            # connection, and the client loses the 413 it was sent.
            record.outcome = "reset_instead_of_4xx"
        self.records.append(record)
        if record.outcome in ("refused_down", "cut_by_kill"):
            await asyncio.sleep(0.2)  # a down replica refuses at once: do not spin on it

    def attribute_to_kill(self, record: RequestRecord, target: Target) -> None:
        """A transport error to a replica that was killed while the request ran (or was down) is expected."""
        replica = target.replica
        ran_into_kill = replica.epoch != target.epoch or not replica.up
        if ran_into_kill:
            record.kill_kind = replica.incarnations[target.incarnation - 1].ended_by or "pending"
        if not ran_into_kill or record.outcome not in ("refused", "transport_error", "unterminated"):
            if record.outcome == "refused":
                record.outcome = "transport_error"
            return
        if record.outcome == "refused":
            record.outcome = "refused_down"
        elif record.kill_kind == "kill_server" or not record.accepted:
            record.outcome = "cut_by_kill"
        # An accepted request cut by an engine death stays "unterminated": the server promises an error event.

    async def send(self, kind: str, key: ApiKey, target: Target, record: RequestRecord) -> None:
        headers = {"Authorization": f"Bearer {key.secret}"}
        url = target.replica.url
        if kind in ("normal", "stream", "cached"):
            if kind == "cached":
                # Temperature 0 with the same prompt: cacheable, so repeats are served from the response cache.
                record.route, body = "/v1/chat/completions", {**chat_body(False, random.Random(7), 0.0)}
            else:
                record.route, body = normal_request(self.rng, kind == "stream")
            if kind == "stream" or body.get("stream"):
                await self.stream(url + record.route, headers, body, record)
            else:
                await self.post_json(url + record.route, headers, json.dumps(body).encode(), record, None)
        elif kind == "oversized":
            record.route, payload, expected = oversized_request(self.rng)
            await self.post_json(url + record.route, headers, payload, record, expected)
        elif kind == "malformed":
            record.route, payload = malformed_request(self.rng)
            await self.post_json(url + record.route, headers, payload, record, MALFORMED_STATUSES)
        elif kind == "cancelled":
            record.route, body = normal_request(self.rng, self.rng.random() < 0.5)
            await self.cancelled(target.replica, headers, record, body)
        else:
            record.route = "/v1/chat/completions"
            await self.slow(target.replica, record)

    async def post_json(
        self, url: str, headers: dict[str, str], payload: bytes, record: RequestRecord, expect: frozenset[int] | None
    ) -> None:
        response = await self.client.post(url, headers={**headers, "Content-Type": "application/json"}, content=payload)
        record.status = response.status_code
        if response.is_success:
            try:
                response.json()
                record.outcome = "completed"
            except ValueError:
                record.outcome, record.detail = "unterminated", "2xx with a body that is not JSON"
        else:
            record.code, record.outcome = error_code(response.content), "rejected"
        if expect is not None and record.status not in expect and not self.documented_503(record):
            record.detail = f"expected one of {sorted(expect)}"

    async def stream(self, url: str, headers: dict[str, str], body: dict[str, Any], record: RequestRecord) -> None:
        watch = StreamWatch()
        try:
            async with self.client.stream("POST", url, headers=headers, json=body) as response:
                record.status = response.status_code
                if not response.is_success:
                    record.code, record.outcome = error_code(await response.aread()), "rejected"
                    return
                async for line in response.aiter_lines():
                    watch.feed(line)
        except httpx.TransportError as exc:
            if record.status is None:
                raise
            record.detail = f"{type(exc).__name__} after {'the end' if watch.finished else 'headers'}"
        if watch.finished:
            record.outcome = "terminal_error" if watch.error else "completed"
        else:
            record.outcome = "unterminated"

    @staticmethod
    def documented_503(record: RequestRecord) -> bool:
        return record.status == 503 and record.code in DOCUMENTED_503_CODES

    async def cancelled(self, replica: Replica, headers: dict[str, str], record: RequestRecord, body: dict) -> None:
        """Send the request over a raw socket and close it 0-200 ms later, whatever has arrived by then."""
        payload = json.dumps(body).encode()
        head = (
            f"POST {record.route} HTTP/1.1\r\nHost: 127.0.0.1:{replica.port}\r\nContent-Type: application/json\r\n"
            f"Authorization: {headers['Authorization']}\r\nContent-Length: {len(payload)}\r\n\r\n"
        ).encode()
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", replica.port), 5)
        received = b""
        try:
            writer.write(head + payload)
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.rng.uniform(0.0, 0.2)):
                    while chunk := await reader.read(65536):
                        received += chunk
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        if received.startswith(b"HTTP/1.1 "):
            record.status = int(received.split(b" ", 2)[1])
            if record.status >= 300:
                record.code = error_code(received.partition(b"\r\n\r\n")[2])
        record.outcome = "cancelled"

    async def slow(self, replica: Replica, record: RequestRecord) -> None:
        """Headers one byte a second: the server must answer 408 or close within its header deadline."""
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", replica.port), 5)
        start = time.monotonic()
        received = b""
        try:
            writer.write(f"POST {record.route} HTTP/1.1\r\nHost: 127.0.0.1:{replica.port}\r\n".encode())
            while time.monotonic() - start < HEADER_TIMEOUT_S + 10:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        chunk = await reader.read(4096)
                        received += chunk
                        if not chunk:
                            break
                writer.write(b"X")
                await writer.drain()
        except (ConnectionError, OSError):
            pass  # the server cut us while we wrote: that is the point
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        waited = time.monotonic() - start
        if received.startswith(b"HTTP/1.1 "):
            record.status = int(received.split(b" ", 2)[1])
        cut_in_time = waited < HEADER_TIMEOUT_S + 5
        record.outcome = "cut" if cut_in_time and record.status in (None, 408) else "not_cut"
        record.detail = f"cut after {waited:.1f} s"


# ---------------------------------------------------------------------------------------------------- chaos


@dataclass
class KillEvent:
    at_s: float
    replica: str
    kind: str  # kill_server: SIGKILL the server; kill_engine: SIGKILL its engine child
    exit_code: int | None = None  # -9 after kill_server; 1 after kill_engine (engine.on_failure: exit)
    exit_expected: bool = False
    orphaned_engine: bool = False  # the engine child outlived its killed server by more than 10 s
    downtime_s: float = 0.0
    restarted: bool = False


class Chaos:
    """Kills a replica every 60-120 s and brings it back on the same port.

    Kills alternate between the replicas, and each replica alternates between killing its server and killing its
    engine. From 60 s before the middle of the run on, only replica 1 is killed, so that replica 0's last incarnation
    lives through the whole second half and its RSS can be judged for flatness."""

    def __init__(
        self, replicas: list[Replica], load: LoadGenerator, seconds: float, seed: int, every_s: tuple[float, float]
    ) -> None:
        self.every_s = every_s
        self.replicas = replicas
        self.load = load
        self.seconds = seconds
        self.rng = random.Random(seed + 1)
        self.events: list[KillEvent] = []
        self.kills_per_replica = Counter[str]()

    async def run(self) -> None:
        next_kill = self.rng.uniform(*self.every_s)
        while next_kill < self.seconds - 20:  # the last restart must be done before the load stops
            await asyncio.sleep(max(0.0, next_kill - self.load.now_s()))
            await self.kill_and_restart(self.choose_replica())
            next_kill = self.load.now_s() + self.rng.uniform(*self.every_s)

    def choose_replica(self) -> Replica:
        protect_first = self.load.now_s() > self.seconds / 2 - 60
        if protect_first or len(self.events) % 2 == 1:
            return self.replicas[1]
        return self.replicas[0]

    async def kill_and_restart(self, replica: Replica) -> None:
        kind = "kill_server" if self.kills_per_replica[replica.name] % 2 == 0 else "kill_engine"
        self.kills_per_replica[replica.name] += 1
        event = KillEvent(self.load.now_s(), replica.name, kind)
        self.events.append(event)
        incarnation, process = replica.current, replica.process
        assert process is not None
        log(f"chaos: {kind} on {replica.name} (pid {incarnation.pid}, engine {incarnation.engine_pid})")
        replica.up = False
        replica.epoch += 1
        incarnation.ended_by, incarnation.killed_s = kind, event.at_s
        if kind == "kill_server":
            os.kill(process.pid, signal.SIGKILL)
        elif incarnation.engine_pid is not None:
            os.kill(incarnation.engine_pid, signal.SIGKILL)
        # A dead engine makes the server exit 1 (engine.on_failure: exit) once it has failed its requests.
        event.exit_code = await wait_exit(process, 60)
        if event.exit_code is None:
            log(f"chaos: {replica.name} did not exit after {kind}; killing it")
            kill_tree(process)
            event.exit_code = process.returncode
        event.exit_expected = event.exit_code == (-signal.SIGKILL if kind == "kill_server" else 1)
        if incarnation.engine_pid is not None:
            # The engine child reads its pipe from the server: a dead server must take it along.
            event.orphaned_engine = not await wait_gone(incarnation.engine_pid, 10)
            if event.orphaned_engine:
                os.kill(incarnation.engine_pid, signal.SIGKILL)
        incarnation.ended_s, incarnation.exit_code = self.load.now_s(), event.exit_code
        incarnation.orphaned_engine = event.orphaned_engine
        launch(replica, self.load.now_s())
        try:
            await wait_healthy(replica)
        except RuntimeError as exc:
            log(f"chaos: {replica.name} did not come back: {exc}")  # the replica stays down; a check fails
            return
        event.restarted = True
        event.downtime_s = self.load.now_s() - event.at_s
        log(f"chaos: {replica.name} back after {event.downtime_s:.1f} s (exit {event.exit_code})")


async def sample_rss(replicas: list[Replica], load: LoadGenerator, deadline_s: float) -> None:
    """VmRSS of every server and engine process, every RSS_SAMPLE_S."""
    while load.now_s() < deadline_s:
        for replica in replicas:
            incarnation = replica.current
            if not replica.up:
                continue
            for pid in (incarnation.pid, incarnation.engine_pid):
                if pid is not None and (kib := rss_kib(pid)) is not None:
                    incarnation.rss.setdefault(pid, []).append((round(load.now_s(), 1), kib))
        await asyncio.sleep(RSS_SAMPLE_S)


# ---------------------------------------------------------------------------------------------------- checks


@dataclass
class Check:
    name: str
    passed: bool
    detail: dict[str, Any]


def check_5xx(records: list[RequestRecord]) -> Check:
    """No 5xx but the documented 503s; connection errors only to a replica that was being killed or was down."""
    undocumented = [
        r for r in records if r.status is not None and r.status >= 500 and not LoadGenerator.documented_503(r)
    ]
    unexplained = [r for r in records if r.outcome == "transport_error"]
    documented = Counter(f"{r.status} {r.code}" for r in records if LoadGenerator.documented_503(r))
    return Check(
        "no_5xx_but_documented_503s",
        not undocumented and not unexplained,
        {
            "documented_503s": dict(documented),
            "undocumented_5xx": [asdict(r) for r in undocumented[:20]],
            "undocumented_5xx_count": len(undocumented),
            "connection_errors_to_a_live_replica": [asdict(r) for r in unexplained[:20]],
            "connection_errors_to_a_live_replica_count": len(unexplained),
            "refused_while_replica_down": sum(r.outcome == "refused_down" for r in records),
            "cut_by_server_kill": sum(r.outcome == "cut_by_kill" and r.kill_kind == "kill_server" for r in records),
            "cut_before_headers_by_engine_kill": sum(
                r.outcome == "cut_by_kill" and r.kill_kind == "kill_engine" for r in records
            ),
        },
    )


def check_terminated(records: list[RequestRecord]) -> Check:
    """Every accepted request (2xx headers) completed or ended with a terminal error event."""
    accepted = [r for r in records if r.accepted]
    unterminated = [r for r in accepted if r.outcome not in ("completed", "terminal_error", "cut_by_kill")]
    return Check(
        "accepted_requests_terminated",
        not unterminated,
        {
            "accepted": len(accepted),
            "completed": sum(r.outcome == "completed" for r in accepted),
            "terminal_error": sum(r.outcome == "terminal_error" for r in accepted),
            "cut_by_server_kill": sum(r.outcome == "cut_by_kill" for r in accepted),
            "neither": len(unterminated),
            "neither_list": [asdict(r) for r in unterminated[:20]],
        },
    )


def check_expected_statuses(records: list[RequestRecord]) -> Check:
    """Oversized and malformed requests get their 4xx; slow clients are cut within the header deadline."""
    wrong = [
        r
        for r in records
        if r.kind in ("oversized", "malformed")
        and (r.detail.startswith("expected") or r.outcome == "reset_instead_of_4xx")
    ]
    not_cut = [r for r in records if r.kind == "slow" and r.outcome == "not_cut"]
    return Check(
        "bad_requests_refused",
        not wrong and not not_cut,
        {
            "wrong_status": [asdict(r) for r in wrong[:20]],
            "slow_not_cut": [asdict(r) for r in not_cut[:20]],
            "slow_cut_408": sum(r.kind == "slow" and r.status == 408 for r in records),
            "slow_cut_closed": sum(r.kind == "slow" and r.outcome == "cut" and r.status is None for r in records),
        },
    )


@dataclass
class KeyUsageCheck:
    key: str
    recorded: int  # usage_daily.requests summed over days
    sure: int  # accepted requests whose usage no kill could have lost
    maybe: int  # requests that may or may not be billed (see check_usage)
    exact: bool
    within: bool


def usage_rows(db_path: Path) -> dict[str, int]:
    """usage_daily.requests per key id (tkr_embed/security/models.py), read after every replica has exited."""
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        return dict(db.execute("SELECT key_id, SUM(requests) FROM usage_daily GROUP BY key_id").fetchall())


def lost_to_kill(record: RequestRecord, replicas: dict[str, Replica]) -> bool:
    """Accepted on an incarnation that was SIGKILLed within USAGE_FLUSH_RISK_S of the request's end: its usage was
    still in the server's buffer (flushed every 0.5 s), or never recorded (cut streams)."""
    incarnation = replicas[record.replica].incarnations[record.incarnation - 1]
    if incarnation.ended_by != "kill_server" or incarnation.killed_s is None:
        return False
    return record.ended_s >= incarnation.killed_s - USAGE_FLUSH_RISK_S


def billing_unknown(record: RequestRecord) -> bool:
    """A request the client saw no answer to, but which the server bills if the engine had produced output for it:
    a cancelled one, one cut by a kill, or a 503 from a replica whose engine died while it ran."""
    died_under_it = record.kill_kind == "kill_engine" and record.status == 503
    return record.kind == "cancelled" or record.outcome == "cut_by_kill" or died_under_it


def check_usage(records: list[RequestRecord], keys: list[ApiKey], replicas: list[Replica], db_path: Path) -> Check:
    """usage_daily.requests of each key against what its clients saw.

    The server counts a request when it produced an answer: engine output (so also one whose stream later ended
    with an error event) or a cache hit. So every accepted request must be counted (`sure`), except where a SIGKILL
    of its server may have lost the count. `maybe` are requests the client cannot judge: accepted ones near a server
    SIGKILL, and those of `billing_unknown`. Keys with maybe == 0 must match exactly."""
    by_name = {replica.name: replica for replica in replicas}
    recorded = usage_rows(db_path)
    results: list[KeyUsageCheck] = []
    for key in keys:
        own = [r for r in records if r.key == key.name]
        at_risk = [r for r in own if r.accepted and lost_to_kill(r, by_name)]
        sure = sum(r.accepted for r in own) - len(at_risk)
        maybe = len(at_risk) + sum(not r.accepted and billing_unknown(r) for r in own)
        got = recorded.get(key.key_id, 0)
        results.append(KeyUsageCheck(key.name, got, sure, maybe, maybe == 0, sure <= got <= sure + maybe))
    return Check(
        "usage_rows_match",
        all(result.within for result in results),
        {"per_key": [asdict(result) for result in results]},
    )


@dataclass
class KvState:
    replica: str
    active_requests: int
    kv_blocks_used: int
    kv_blocks_total: int


async def read_kv(replica: Replica, settle_s: float = 30.0) -> KvState:
    """/health's engine figures, once the engine has had `settle_s` to finish what the load left (aborts, the last
    decodes): the pool must come back full, not just shrink."""
    deadline = time.monotonic() + settle_s
    async with httpx.AsyncClient(timeout=10) as client:
        while True:
            health = (await client.get(replica.url + "/health")).json()
            memory = health["memory"]
            state = KvState(
                replica.name, health["active_requests"], memory["kv_cache_blocks_used"], memory["kv_cache_blocks_total"]
            )
            if (state.active_requests == 0 and state.kv_blocks_used == 0) or time.monotonic() > deadline:
                return state
            await asyncio.sleep(0.5)


def check_kv(states: list[KvState]) -> Check:
    return Check(
        "kv_pool_full",
        all(s.active_requests == 0 and s.kv_blocks_used == 0 for s in states),
        {"replicas": [asdict(s) for s in states]},
    )


@dataclass
class RssVerdict:
    replica: str
    pid: int
    role: str  # server or engine
    samples: int
    median_kib: int
    min_kib: int
    max_kib: int
    start_level_kib: int
    end_level_kib: int
    drift: float  # end level / start level - 1
    flat: bool
    series: list[tuple[float, int]]  # (s, KiB) over the second half


def check_rss(replicas: list[Replica], seconds: float) -> Check:
    """Per incarnation alive through the whole second half: the RSS level at its end within ±10% of the level at
    its start. A level is a median of RSS_LEVEL_SAMPLES samples, because the engine's RSS swings by about 10% from
    one batch to the next (torch's CPU allocations come and go); a leak shows as a level that moves. The min, max
    and the whole series are reported beside it."""
    half = seconds / 2
    verdicts: list[RssVerdict] = []
    for replica in replicas:
        for incarnation in replica.incarnations:
            if incarnation.started_s > half - RSS_SAMPLE_S or incarnation.ended_by not in (None, "sigterm"):
                continue
            for pid, samples in incarnation.rss.items():
                series = [(t, kib) for t, kib in samples if t >= half]
                values = [kib for _, kib in series]
                if not values:
                    continue
                start = statistics.median(values[:RSS_LEVEL_SAMPLES])
                end = statistics.median(values[-RSS_LEVEL_SAMPLES:])
                drift = end / start - 1
                role = "server" if pid == incarnation.pid else "engine"
                verdicts.append(
                    RssVerdict(
                        replica.name,
                        pid,
                        role,
                        len(values),
                        int(statistics.median(values)),
                        min(values),
                        max(values),
                        int(start),
                        int(end),
                        round(drift, 4),
                        abs(drift) <= RSS_TOLERANCE,
                        series,
                    )
                )
    return Check(
        "rss_flat",
        bool(verdicts) and all(v.flat for v in verdicts),
        {"tolerance": RSS_TOLERANCE, "processes": [asdict(v) for v in verdicts]},
    )


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


def check_shutdown(results: list[ShutdownResult], kills: list[KillEvent]) -> Check:
    return Check(
        "exits_as_documented",
        all(r.exit_code == 0 and not r.children_left for r in results)
        and all(k.exit_expected and not k.orphaned_engine and k.restarted for k in kills),
        {"sigterm": [asdict(r) for r in results], "kills": [asdict(k) for k in kills]},
    )


# ---------------------------------------------------------------------------------------------------- the run


@dataclass
class Report:
    seconds: float
    requests: int
    requests_per_s: float
    by_kind: dict[str, int]
    by_status: dict[str, int]
    by_kind_and_outcome: dict[str, dict[str, int]]
    latency_s: dict[str, dict[str, float]]  # completed normal/stream/cached requests: p50, p95, max
    checks: list[Check]
    passed: bool


def latencies(records: list[RequestRecord]) -> dict[str, dict[str, float]]:
    summary: dict[str, dict[str, float]] = {}
    for kind in ("normal", "stream", "cached"):
        durations = sorted(r.ended_s - r.started_s for r in records if r.kind == kind and r.outcome == "completed")
        if durations:
            p95 = durations[min(len(durations) - 1, int(0.95 * len(durations)))]
            summary[kind] = {
                "p50": round(statistics.median(durations), 3),
                "p95": round(p95, 3),
                "max": round(durations[-1], 3),
            }
    return summary


def summarise(records: list[RequestRecord], checks: list[Check], seconds: float) -> Report:
    by_kind_outcome: dict[str, Counter[str]] = {}
    for r in records:
        by_kind_outcome.setdefault(r.kind, Counter())[r.outcome] += 1
    return Report(
        seconds=seconds,
        requests=len(records),
        requests_per_s=round(len(records) / seconds, 2),
        by_kind=dict(Counter(r.kind for r in records)),
        by_status=dict(Counter("none" if r.status is None else str(r.status) for r in records)),
        by_kind_and_outcome={kind: dict(counts) for kind, counts in by_kind_outcome.items()},
        latency_s=latencies(records),
        checks=checks,
        passed=all(check.passed for check in checks),
    )


def write_demo_model(path: Path) -> None:
    # Once, before any replica starts: replicas that each wrote it would race on the same files.
    from tkr_embed.models.gpt_oss.demo import write_demo_checkpoint

    write_demo_checkpoint(path)


async def create_keys(replica: Replica, master_key: str, names: list[str]) -> list[ApiKey]:
    keys: list[ApiKey] = []
    async with httpx.AsyncClient(base_url=replica.url, headers={"Authorization": f"Bearer {master_key}"}) as admin:
        for name in names:
            response = await admin.post("/admin/api-keys", json={"name": name})
            response.raise_for_status()
            body = response.json()
            keys.append(ApiKey(name, body["id"], body["api_key"]))
    return keys


async def soak(seconds: float, workdir: Path, seed: int, kill_every_s: tuple[float, float]) -> Report:
    model_dir, data_dir = workdir / "demo", workdir / "data"
    data_dir.mkdir(parents=True)
    write_demo_model(model_dir)
    master_key, secret_key = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    replicas = [
        Replica(name, port, replica_env(port, model_dir, data_dir, master_key, secret_key), workdir)
        for name, port in (("replica-0", free_port()), ("replica-1", free_port()))
    ]
    try:
        # One at a time: the first creates the database tables, the second finds them.
        for replica in replicas:
            launch(replica, 0.0)
            await wait_healthy(replica)
        log(f"replicas up on ports {[r.port for r in replicas]}")
        keys = await create_keys(replicas[0], master_key, [f"client-{i}" for i in range(4)] + ["canceller"])
        load = LoadGenerator(replicas, keys[:-1], keys[-1], seed)
        for incarnation in (r.current for r in replicas):
            incarnation.started_s = -1.0
        chaos = Chaos(replicas, load, seconds, seed, kill_every_s)
        await asyncio.gather(load.run(seconds), chaos.run(), sample_rss(replicas, load, seconds))
        log(f"load done: {len(load.records)} requests; checking")
        kv = [await read_kv(replica) for replica in replicas]
        shutdowns = [await stop_gracefully(replica, load.now_s()) for replica in replicas]
        checks = [
            check_5xx(load.records),
            check_terminated(load.records),
            check_expected_statuses(load.records),
            check_usage(load.records, keys, replicas, data_dir / "soak.db"),
            check_kv(kv),
            check_rss(replicas, seconds),
            check_shutdown(shutdowns, chaos.events),
        ]
        return summarise(load.records, checks, seconds)
    finally:
        for replica in replicas:
            if replica.process is not None:
                kill_tree(replica.process)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="how long the load runs (default 600)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the request mix and the kill times")
    parser.add_argument(
        "--kill-every", type=float, nargs=2, default=[60.0, 120.0], metavar=("MIN", "MAX"), help="seconds between kills"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (server logs, the database)")
    return parser.parse_args()


@contextlib.contextmanager
def work_folder(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="chaos-soak-"))
    try:
        yield path
    finally:
        if keep:
            log(f"kept {path}")
        else:
            subprocess.run(["rm", "-rf", str(path)], check=False)


def main() -> int:
    args = parse_args()
    with work_folder(args.keep) as workdir:
        report = asyncio.run(soak(args.seconds, workdir, args.seed, tuple(args.kill_every)))
    print(json.dumps(asdict(report), indent=2))
    failed = [check.name for check in report.checks if not check.passed]
    log("all checks passed" if not failed else f"failed: {', '.join(failed)}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
