"""Run a script or module with the engine's steps recorded: when each step's tokens reached the host, how long
its postprocess took and what the step held, and when each request was added.

    python bench/step_trace.py /tmp/trace -- -m tkr_embed.cli bench --model gpt-oss-20b --device cuda ...
    python bench/step_trace.py /tmp/trace -- -m tkr_embed.api.server
    python bench/step_trace.py --summary /tmp/trace [--min-wave N] [load.json ...]    # the waves of a trace

Every process that runs an engine appends JSON lines to TRACE.<pid>.jsonl: this one, and the server's engine
process, a fresh interpreter that keeps none of this one's patches and records through the hook this script puts
on its PYTHONPATH (`step_trace_hook/sitecustomize.py`). A step: {"step": t, "pp": seconds, "tokens", "prefill"
(tokens of prefill chunks), "decodes" (one-token entries), "entries"}, t when `LLMEngine.postprocess` began (its
tokens had reached the host; perf_counter, one clock for every process on Linux); an added request: {"add": t,
"arrival": t}. Lines are written in batches and when the process ends.

`--summary` reads every process's file and splits the steps into waves (requests added within 50 ms of each
other). Per wave of at least 8 requests (`--min-wave`): over how long its requests reached the engine and were added, its
prefill steps, its decode steps (p50 and p90 of their intervals, how many took over 8 ms, the postprocess p50);
given the load generator's JSON files (their `started_at`), the time from the client's start to the first
request's arrival.
"""

from __future__ import annotations

import atexit
import json
import multiprocessing.util
import os
import signal
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]  # tkr_embed and with_patch.py without PYTHONPATH

from with_patch import run_target  # noqa: E402

from tkr_embed.bench_cli import percentiles  # noqa: E402

HOOK = BENCH / "step_trace_hook"
FLUSH_EVERY = 256  # lines kept before they are appended to the file
SLOW_STEP_MS = 8.0


def record(prefix: str) -> None:
    """Record this process's engine steps and added requests into `prefix`.<pid>.jsonl."""
    from tkr_embed.engine.llm_engine import LLMEngine

    path = Path(f"{prefix}.{os.getpid()}.jsonl")
    lines: list[str] = []

    def flush() -> None:
        if lines:
            with path.open("a") as file:
                file.write("".join(lines))
            lines.clear()

    postprocess, add_request = LLMEngine.postprocess, LLMEngine.add_request

    def traced_postprocess(self, batch, sampled, *args, **kwargs):
        begin = time.perf_counter()
        outputs = postprocess(self, batch, sampled, *args, **kwargs)
        step = {
            "step": begin,
            "pp": time.perf_counter() - begin,
            "tokens": batch.num_tokens,
            "prefill": sum(len(e.token_ids) for e in batch.entries if e.is_prefill),
            "decodes": sum(1 for e in batch.entries if not e.is_prefill),
            "entries": len(batch.entries),
        }
        lines.append(json.dumps(step) + "\n")
        if len(lines) >= FLUSH_EVERY:
            flush()
        return outputs

    def traced_add(self, request_id, prompt_token_ids, params, arrival=None):
        # arrival: AsyncEngine.generate's time.monotonic(), perf_counter's clock on Linux
        lines.append(json.dumps({"add": time.perf_counter(), "arrival": arrival}) + "\n")
        return add_request(self, request_id, prompt_token_ids, params, arrival)

    LLMEngine.postprocess, LLMEngine.add_request = traced_postprocess, traced_add
    atexit.register(flush)
    multiprocessing.util.Finalize(None, flush, exitpriority=0)  # a multiprocessing child ends without atexit
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):
        flush()
        if callable(previous):
            previous(signum, frame)
        else:
            raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)


def trace_children(prefix: str) -> None:
    """Processes started from here (the server's engine process) record into `prefix` too."""
    os.environ["TKR_STEP_TRACE"] = prefix
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(HOOK), str(BENCH), str(BENCH.parent), *filter(None, [os.environ.get("PYTHONPATH")])]
    )


def load(prefix: str) -> tuple[list[dict], list[dict]]:
    """(steps, added requests) of every process that recorded into `prefix`, in time order."""
    records = []
    for path in Path(prefix).parent.glob(f"{Path(prefix).name}.*.jsonl"):
        records += [json.loads(line) for line in path.read_text().splitlines() if line]
    steps = sorted((r for r in records if "step" in r), key=lambda r: r["step"])
    adds = sorted((r for r in records if "add" in r), key=lambda r: r["add"])
    return steps, adds


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e3, 3)


def summary(prefix: str, client_starts: list[float], min_wave: int = 8) -> None:
    steps, added = load(prefix)
    adds = [a["add"] for a in added]
    arrivals = [a["arrival"] for a in added if a["arrival"] is not None]
    waves: list[list[float]] = []
    for t in adds:
        if waves and t - waves[-1][-1] < 0.05:
            waves[-1].append(t)
        else:
            waves.append([t])
    for wave in waves:
        if len(wave) < min_wave:
            continue
        start = wave[0]
        later = [w[0] for w in waves if w[0] > start]
        end = later[0] if later else float("inf")
        mine = [s for s in steps if start <= s["step"] < end]
        if not mine:
            continue
        prefill = [s for s in mine if s["prefill"]]
        intervals, last = [], start
        for s in mine:
            if s["prefill"]:
                intervals.append(round((s["step"] - last) * 1e3, 1))
            last = s["step"]
        # a decode step's time: from the step before it (neither holding prefill) to it
        decodes = [(a, b) for a, b in zip(mine, mine[1:], strict=False) if not a["prefill"] and not b["prefill"]]
        gaps = [b["step"] - a["step"] for a, b in decodes]
        step_times = percentiles(gaps, (50, 90))
        mine_arrivals = [a for a in arrivals if start - 1.0 <= a <= wave[-1]]
        client = [c for c in client_starts if start - 2.0 <= c <= start]
        first_arrival = min(mine_arrivals) if mine_arrivals else None
        row = {
            "requests": len(wave),
            "added_over_ms": ms(wave[-1] - start),
            "arrived_over_ms": ms(max(mine_arrivals) - first_arrival) if mine_arrivals else None,
            "first_arrival_to_first_add_ms": ms(start - first_arrival) if mine_arrivals else None,
            "client_start_to_first_arrival_ms": ms(first_arrival - client[-1]) if mine_arrivals and client else None,
            "wall_ms": ms(mine[-1]["step"] - start),
            "steps": len(mine),
            "prefill_steps": [(s["prefill"], s["decodes"]) for s in prefill],
            "prefill_step_ms": intervals,
            "prefill_done_ms": ms(prefill[-1]["step"] - start) if prefill else None,
            "decode_steps": len(gaps),
            "decode_step_ms_p50": ms(step_times["p50"]),
            "decode_step_ms_p90": ms(step_times["p90"]),
            "decode_steps_over_8_ms": sum(gap * 1e3 > SLOW_STEP_MS for gap in gaps),
            "decode_postprocess_ms_p50": ms(percentiles([b["pp"] for _, b in decodes], (50,))["p50"]),
            "decode_ms_total": ms(sum(gaps)),
        }
        print(json.dumps(row))


def main(argv: list[str]) -> None:
    if argv[:1] == ["--summary"]:  # --summary TRACE [--min-wave N] [LOAD_JSON ...]: the load generator's started_at
        rest, min_wave = argv[2:], 8
        if rest[:1] == ["--min-wave"]:
            rest, min_wave = rest[2:], int(rest[1])
        starts = sorted(json.loads(Path(f).read_text()).get("started_at", 0.0) for f in rest)
        summary(argv[1], starts, min_wave)
        return
    prefix, separator, *target = argv
    if separator != "--" or not target:
        raise SystemExit(__doc__)
    record(prefix)
    trace_children(prefix)
    run_target(target)


if __name__ == "__main__":
    main(sys.argv[1:])
