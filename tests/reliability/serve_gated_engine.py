"""`python serve_gated_engine.py PORT GATE`: the real `serve()` (settings from GENERATION_*) over the scripted fake
engine, whose start (as a model's load) waits until the file GATE exists: the server's `starting` phase lasts as
long as the test wants."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "api"))

from fake_engine import FakeEngine  # noqa: E402

from tkr_embed.api.server import serve  # noqa: E402
from tkr_embed.harmony.tokenizer import get_tokenizer  # noqa: E402

POLL_S = 0.05


class GatedEngine(FakeEngine):
    gate: Path = Path("/nonexistent")

    async def start(self) -> None:
        while not self.gate.exists():
            await asyncio.sleep(POLL_S)


def main() -> int:
    engine = GatedEngine(decode=get_tokenizer().decode)
    engine.gate = Path(sys.argv[2])
    return serve(host="127.0.0.1", port=int(sys.argv[1]), engine=engine)


if __name__ == "__main__":
    sys.exit(main())
