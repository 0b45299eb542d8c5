"""Run a script or module with the engine's steps recorded: when each step's tokens reached the host and
what the step held, and when each request was added. Written as JSON to TRACE_FILE at exit.

    python bench/step_trace.py /tmp/trace.json -- -m tkr_embed.cli bench --model gpt-oss-20b --device cuda ...
    python bench/step_trace.py /tmp/trace.json -- -m tkr_embed.api.server     # SIGTERM ends it and writes
    python bench/step_trace.py --summary /tmp/trace.json [load.json ...]       # the waves of a trace

A step is one `LLMEngine.postprocess` call: {t (s, perf_counter), tokens, prefill (tokens of prefill
chunks), decodes (one-token entries), entries}. `--summary` splits the trace into waves (requests added
within 50 ms of each other) and prints, per wave of at least 8 requests: over how long its requests reached
the AsyncEngine and were added, the steps until its last request finished, the prefill steps' sizes and
intervals; given the load generator's JSON files (their `started_at`), the time from the client's start to
the first request's arrival.
"""

from __future__ import annotations

import atexit
import json
import signal
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]  # tkr_embed and with_patch.py without PYTHONPATH

from with_patch import run_target  # noqa: E402


def record(path: str) -> None:
    from tkr_embed.engine.llm_engine import LLMEngine

    steps: list[dict] = []
    adds: list[float] = []
    arrivals: list[float] = []
    postprocess, add_request = LLMEngine.postprocess, LLMEngine.add_request

    def traced_postprocess(self, batch, sampled):
        prefill = sum(len(e.token_ids) for e in batch.entries if e.is_prefill)
        steps.append(
            {
                "t": time.perf_counter(),
                "tokens": batch.num_tokens,
                "prefill": prefill,
                "decodes": sum(1 for e in batch.entries if not e.is_prefill),
                "entries": len(batch.entries),
            }
        )
        return postprocess(self, batch, sampled)

    def traced_add(self, request_id, prompt_token_ids, params, arrival=None):
        adds.append(time.perf_counter())
        if arrival is not None:  # AsyncEngine.generate's time.monotonic(): perf_counter's clock on Linux
            arrivals.append(arrival)
        return add_request(self, request_id, prompt_token_ids, params, arrival)

    LLMEngine.postprocess, LLMEngine.add_request = traced_postprocess, traced_add

    def dump() -> None:
        Path(path).write_text(json.dumps({"adds": adds, "arrivals": arrivals, "steps": steps}))

    atexit.register(dump)
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):
        dump()
        if callable(previous):
            previous(signum, frame)
        else:
            raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)


def summary(path: str, client_starts: list[float]) -> None:
    trace = json.loads(Path(path).read_text())
    adds, steps, arrivals = trace["adds"], trace["steps"], trace.get("arrivals", [])
    waves: list[list[float]] = []
    for t in adds:
        if waves and t - waves[-1][-1] < 0.05:
            waves[-1].append(t)
        else:
            waves.append([t])
    for wave in waves:
        if len(wave) < 8:
            continue
        start = wave[0]
        later = [w[0] for w in waves if w[0] > start]
        end = later[0] if later else float("inf")
        mine = [s for s in steps if start <= s["t"] < end]
        if not mine:
            continue
        # the wave ends at its last step with tokens (later steps belong to nothing)
        prefill = [s for s in mine if s["prefill"]]
        intervals, last = [], start
        for s in mine:
            if s["prefill"]:
                intervals.append(round((s["t"] - last) * 1e3, 1))
            last = s["t"]
        decode_only = [s for s in mine if not s["prefill"]]
        mine_arrivals = [a for a in arrivals if start - 1.0 <= a <= wave[-1]]
        client = [c for c in client_starts if start - 2.0 <= c <= start]
        gaps = [b["t"] - a["t"] for a, b in zip(mine, mine[1:], strict=False) if not b["prefill"] and not a["prefill"]]
        print(
            json.dumps(
                {
                    "requests": len(wave),
                    "added_over_ms": round((wave[-1] - start) * 1e3, 1),
                    "arrived_over_ms": round((max(mine_arrivals) - min(mine_arrivals)) * 1e3, 1)
                    if mine_arrivals
                    else None,
                    "first_arrival_to_first_add_ms": round((start - min(mine_arrivals)) * 1e3, 1)
                    if mine_arrivals
                    else None,
                    "client_start_to_first_arrival_ms": round((min(mine_arrivals) - client[-1]) * 1e3, 1)
                    if mine_arrivals and client
                    else None,
                    "wall_ms": round((mine[-1]["t"] - start) * 1e3, 1),
                    "steps": len(mine),
                    "prefill_steps": [(s["prefill"], s["decodes"]) for s in prefill],
                    "prefill_step_ms": intervals,
                    "prefill_done_ms": round((prefill[-1]["t"] - start) * 1e3, 1) if prefill else None,
                    "decode_steps": len(decode_only),
                    "decode_step_ms_p50": round(sorted(gaps)[len(gaps) // 2] * 1e3, 3) if gaps else None,
                    "decode_ms_total": round(sum(gaps) * 1e3, 1),
                }
            )
        )


def main(argv: list[str]) -> None:
    if argv[:1] == ["--summary"]:  # --summary TRACE [LOAD_JSON ...]: the load generator's started_at
        summary(argv[1], sorted(json.loads(Path(f).read_text()).get("started_at", 0.0) for f in argv[2:]))
        return
    path, separator, *target = argv
    if separator != "--" or not target:
        raise SystemExit(__doc__)
    record(path)
    run_target(target)


if __name__ == "__main__":
    main(sys.argv[1:])
