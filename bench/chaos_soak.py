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
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import httpx
from chaos.chaos import Chaos
from chaos.checks import (
    Report,
    check_5xx,
    check_expected_statuses,
    check_kv,
    check_rss,
    check_shutdown,
    check_terminated,
    check_usage,
    read_kv,
    sample_rss,
    summarise,
)
from chaos.load import ApiKey, LoadGenerator
from chaos.processes import (
    REPO_ROOT,
    Replica,
    free_port,
    kill_tree,
    launch,
    log,
    replica_env,
    stop_gracefully,
    wait_healthy,
)

sys.path.insert(0, str(REPO_ROOT))  # tkr_embed's demo checkpoint writer, run from a checkout as the servers are


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
