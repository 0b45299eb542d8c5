"""The server engine's step time by phase over an interval, from its /metrics counters.

    python bench/engine_phases.py --url URL > before.json            # a snapshot
    python bench/engine_phases.py --url URL --since before.json      # ms a step by phase since then

The phases (schedule, launch, wait, postprocess, deliver) are those `tkr-embed bench` reports for the
offline engine (`step_phase_ms` of each run), so a server run and an offline run compare phase by phase.
"""

from __future__ import annotations

import argparse
import json
import sys

import httpx
from prometheus_client.parser import text_string_to_metric_families


def snapshot(url: str) -> dict[str, float]:
    """{"steps": n, phase: seconds, ...} summed since the server started."""
    body = httpx.get(url.rstrip("/") + "/metrics", timeout=30).text
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == "tkr_engine_steps_total":
                totals["steps"] = sample.value
            elif sample.name == "tkr_engine_step_phase_seconds_total":
                totals[sample.labels["phase"]] = sample.value
    return totals


def per_step_ms(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    steps = after.get("steps", 0.0) - before.get("steps", 0.0)
    if steps <= 0:
        return {"steps": 0}
    phases = {name: (value - before.get(name, 0.0)) * 1e3 / steps for name, value in after.items() if name != "steps"}
    return {"steps": int(steps), **phases}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--since", default=None, help="a snapshot file written earlier by this script")
    args = parser.parse_args(argv)
    now = snapshot(args.url)
    if args.since is None:
        print(json.dumps(now))
    else:
        with open(args.since) as handle:
            print(json.dumps(per_step_ms(json.load(handle), now)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
