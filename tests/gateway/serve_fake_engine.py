"""`python serve_fake_engine.py PORT`: the real `serve()` (settings from GENERATION_*, JSON logs,
uvicorn with log_config=None, the default extensions) over the scripted fake engine."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "api"))

from fake_engine import FakeEngine  # noqa: E402

from tkr_embed.api.server import serve  # noqa: E402
from tkr_embed.harmony.tokenizer import get_tokenizer  # noqa: E402

ANSWER = "<|channel|>analysis<|message|>hmm<|end|><|start|>assistant<|channel|>final<|message|>Hi<|return|>"


def main() -> int:
    tokenizer = get_tokenizer()
    answer = tokenizer.encoding.encode(ANSWER, allowed_special="all")
    engine = FakeEngine(decode=tokenizer.decode, script=lambda prompt, params: answer)
    engine.max_waiting = 1000
    return serve(host="127.0.0.1", port=int(sys.argv[1]), engine=engine)


if __name__ == "__main__":
    sys.exit(main())
