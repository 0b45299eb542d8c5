"""What the stream parser reports: typed deltas while generating, and the parsed whole."""

from __future__ import annotations

from dataclasses import dataclass

from tkr_embed.harmony.types import ToolCall


@dataclass
class ReasoningDelta:
    """New text on the analysis channel (chain of thought: never part of the answer)."""

    text: str


@dataclass
class ContentDelta:
    """New answer text: the final channel, commentary preambles, or plain text with no channel."""

    text: str


@dataclass
class ToolCallDelta:
    """New argument text of tool call `index`; `id` and `name` are set on the first delta of a call."""

    index: int
    id: str | None
    name: str | None
    arguments: str


@dataclass
class ParsedOutput:
    """Everything parsed so far; equals the concatenation of every delta reported."""

    reasoning: str
    content: str
    tool_calls: list[ToolCall]


ParserEvent = ReasoningDelta | ContentDelta | ToolCallDelta
