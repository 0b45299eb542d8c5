"""The load: the request kinds (normal, streaming, cached, cancelled, oversized, malformed, slow) and the workers
that send the mix to the replicas and record what each request saw."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from dataclasses import dataclass
from typing import Any

import httpx

from .processes import HEADER_TIMEOUT_S, MAX_BODY_BYTES, MODEL_NAME, Replica

# The 503 codes the server documents (README, "Shutdown and failures" and admission); any other 5xx is a bug.
DOCUMENTED_503_CODES = frozenset({"engine_dead", "draining", "restarting", "server_overloaded", "engine_unavailable"})
MALFORMED_STATUSES = frozenset({400, 413, 415, 422})
MAX_INPUT_ITEMS = 2048  # server.max_input_items (the default)
WORKERS = 8
HTTP_TIMEOUT_S = 120.0  # a normal request on a busy 2-core machine; a hang shows as a timeout, not as a stall


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
