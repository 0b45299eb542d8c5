"""bench/step_trace.py records the steps of the engine that actually serves: the server's engine process, a
fresh interpreter that keeps none of the tracer's own patches."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parents[1] / "api"))

from server_process import REPO_ROOT, demo_env, free_port, server_process  # noqa: E402

REQUESTS = 8


def test_the_servers_engine_process_records_its_steps_and_the_summary_reads_them(
    demo_model_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    prefix = tmp_path / "trace"
    command = [
        sys.executable,
        str(REPO_ROOT / "bench" / "step_trace.py"),
        str(prefix),
        "--",
        "-m",
        "tkr_embed.api.server",
    ]
    env = demo_env(demo_model_dir, tmp_path / "data", port, GENERATION_ENGINE__MAX_NUM_SEQS=str(REQUESTS))
    with server_process(tmp_path, env, port, command) as server:
        server.wait_healthy()
        engine_pid = server.engine_pid()
        body = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8}
        with ThreadPoolExecutor(REQUESTS) as pool:
            answers = list(
                pool.map(
                    lambda _: httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60), range(REQUESTS)
                )
            )
        assert [answer.status_code for answer in answers] == [200] * REQUESTS
        server.process.send_signal(signal.SIGTERM)
        assert server.wait_exit(60) == 0

    records = [json.loads(line) for line in (tmp_path / f"trace.{engine_pid}.jsonl").read_text().splitlines()]
    adds = [r for r in records if "add" in r]
    steps = [r for r in records if "step" in r]
    assert len(adds) == REQUESTS
    assert sum(step["decodes"] for step in steps) >= REQUESTS  # every answer's tokens after the first
    assert all(step["pp"] >= 0 and step["entries"] >= 1 for step in steps)
    summary = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "step_trace.py"), "--summary", str(prefix), "--min-wave", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    waves = [json.loads(line) for line in summary.stdout.splitlines()]
    # a slow CPU steps while requests still arrive: they may come in several waves (one whose window holds no step
    # of its own is left out)
    assert waves and sum(wave["requests"] for wave in waves) <= REQUESTS
    assert all(wave["steps"] >= 1 for wave in waves) and sum(wave["decode_steps"] for wave in waves) >= 1
