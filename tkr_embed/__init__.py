"""tkr-embed: a production text-generation server for gpt-oss models."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["LLM", "SamplingParams", "__version__"]

if TYPE_CHECKING:
    from tkr_embed.engine.sampling_params import SamplingParams
    from tkr_embed.llm import LLM


def __getattr__(name: str):
    # Lazy so that `import tkr_embed` (e.g. for the CLI) does not pull torch in.
    if name == "LLM":
        from tkr_embed.llm import LLM

        return LLM
    if name == "SamplingParams":
        from tkr_embed.engine.sampling_params import SamplingParams

        return SamplingParams
    raise AttributeError(name)
