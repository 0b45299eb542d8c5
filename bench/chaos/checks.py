"""The end checks (5xx, terminated requests, refused bad requests, usage rows, the KV pool, RSS, exit statuses),
what they read (RSS samples, /health, the usage table) and the report that carries them."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import statistics
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from .chaos import KillEvent
from .load import ApiKey, LoadGenerator, RequestRecord
from .processes import Replica, ShutdownResult, rss_kib

USAGE_FLUSH_RISK_S = 2.0  # usage is buffered for 0.5 s: a SIGKILL loses what finished this shortly before it
RSS_SAMPLE_S = 5.0
RSS_TOLERANCE = 0.10
RSS_LEVEL_SAMPLES = 5  # a level is the median of this many samples (25 s): one transient peak is not a level


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


def check_shutdown(results: list[ShutdownResult], kills: list[KillEvent]) -> Check:
    return Check(
        "exits_as_documented",
        all(r.exit_code == 0 and not r.children_left for r in results)
        and all(k.exit_expected and not k.orphaned_engine and k.restarted for k in kills),
        {"sigterm": [asdict(r) for r in results], "kills": [asdict(k) for k in kills]},
    )


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
