"""Top frames of a py-spy raw (collapsed) profile: self and inclusive sample counts. Usage: collapsed_top.py FILE [N]"""

from __future__ import annotations

import sys
from collections import Counter


def main() -> int:
    path, top = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 25
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in open(path, encoding="utf-8", errors="replace"):
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        samples = int(count)
        total += samples
        threads[frames[0][:60]] += samples
        own[frames[-1][:140]] += samples
        for frame in set(frames[1:]):
            inclusive[frame[:140]] += samples
    print("samples", total)
    for title, counter in (("threads", threads), ("self", own), ("inclusive", inclusive)):
        print("--", title)
        for frame, samples in counter.most_common(top):
            print(f"{samples / max(total, 1):6.1%} {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
