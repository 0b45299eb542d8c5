"""How many threads torch's CPU ops use (`engine.cpu_threads`; None: `auto_cpu_threads`).

Left to its default, torch starts one OpenMP thread per core. The server is never alone on those cores: its
HTTP process (and, with the engine in a thread, its event loop) parses, tokenizes and streams beside the engine.
An OpenMP team whose threads do not all get a core waits at every op's barrier for the one that was descheduled,
and a decode step is hundreds of small ops. On a 2-core machine the demo server decoded 6 to 13 times slower with
2 threads than with 1 once other work ran beside it, and only 7 to 18% faster with the machine to itself
(BENCHMARKS.md, "CPU threads"). So the engine takes every usable core but one, and at least one.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota (containers)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no affinity masks
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota(CGROUP_CPU_MAX)
    return max(1, min(cpus, quota) if quota is not None else cpus)


def _cgroup_quota(path: Path) -> int | None:
    """`cpu.max` holds "QUOTA PERIOD" (or "max PERIOD" for none): QUOTA / PERIOD CPUs, rounded up."""
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, -(-int(quota) // int(period)))


def auto_cpu_threads(cpus: int) -> int:
    """Every usable core but one, which the HTTP side keeps."""
    return max(1, cpus - 1)


def configure_cpu_threads(requested: int | None) -> int:
    """Set torch's intra-op threads for this process; returns the count. `requested` None: `auto_cpu_threads`."""
    import torch

    cpus = usable_cpus()
    threads = requested if requested is not None else auto_cpu_threads(cpus)
    torch.set_num_threads(threads)
    how = "engine.cpu_threads" if requested is not None else f"auto: {cpus} usable CPUs, one left to the HTTP side"
    logger.info("torch CPU threads: %d (%s)", threads, how)
    return threads
