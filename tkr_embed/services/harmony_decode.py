"""Engine updates → per-choice reasoning / answer / tool-call deltas, through the harmony parser."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from tkr_embed.engine.outputs import CompletionOutput, FinishReason, TokenLogprob
from tkr_embed.engine.stop_matcher import StopStringMatcher
from tkr_embed.harmony.events import ContentDelta, ReasoningDelta, ToolCallDelta
from tkr_embed.harmony.parser import HarmonyStreamParser
from tkr_embed.harmony.types import ToolCall


def openai_finish_reason(reason: str) -> str:
    """The finish reason as OpenAI clients know it: "abort" (the server stopped the request, e.g. at
    shutdown) is not one of OpenAI's values, and the answer was cut short, so it reads as "length"."""
    return "length" if reason == FinishReason.ABORT.value else reason


@dataclass
class ChoiceDelta:
    """What one choice produced in one engine update."""

    index: int
    reasoning: str = ""
    content: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)
    content_logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None

    @property
    def is_empty(self) -> bool:
        return not (self.reasoning or self.content or self.tool_calls or self.finish_reason)


@dataclass
class ChoiceResult:
    """One choice, complete."""

    index: int
    reasoning: str
    content: str
    tool_calls: list[ToolCall]
    content_logprobs: list[TokenLogprob]
    finish_reason: str
    num_tokens: int
    num_reasoning_tokens: int


class _ChoiceDecoder:
    def __init__(self, index: int, forced_prefix: list[int] | None, stop: list[str]) -> None:
        self.index = index
        self.parser = HarmonyStreamParser(forced_prefix=forced_prefix)
        self.stop_matcher = StopStringMatcher(stop)
        self.reasoning: list[str] = []
        self.content: list[str] = []
        self.logprobs: list[TokenLogprob] = []
        self.num_tokens = 0
        self.num_reasoning_tokens = 0
        self.saw_tool_call = False
        self.finish_reason: str | None = None

    def step(self, output: CompletionOutput) -> ChoiceDelta:
        delta = ChoiceDelta(self.index)
        if self.finish_reason is not None:
            return delta
        logprobs = output.new_logprobs or []
        for position, token_id in enumerate(output.new_token_ids):
            self.num_tokens += 1
            self._feed(token_id, logprobs[position] if position < len(logprobs) else None, delta)
            if self.stop_matcher.stopped:
                delta.finish_reason = self.finish_reason = "stop"
                return delta
        if output.finish_reason is not None:
            tail = self.stop_matcher.flush()
            delta.content += tail
            self.content.append(tail)
            delta.finish_reason = self.finish_reason = self._map_finish(output.finish_reason)
        return delta

    def _feed(self, token_id: int, logprob: TokenLogprob | None, delta: ChoiceDelta) -> None:
        is_reasoning = False
        for event in self.parser.feed(token_id):
            if isinstance(event, ReasoningDelta):
                is_reasoning = True
                delta.reasoning += event.text
                self.reasoning.append(event.text)
            elif isinstance(event, ContentDelta):
                if logprob is not None:
                    delta.content_logprobs.append(logprob)
                    self.logprobs.append(logprob)
                emitted = self.stop_matcher.push(event.text)
                delta.content += emitted
                self.content.append(emitted)
            elif isinstance(event, ToolCallDelta):
                self.saw_tool_call = True
                last = delta.tool_calls[-1] if delta.tool_calls else None
                if last is not None and last.index == event.index:  # one entry a call per chunk
                    delta.tool_calls[-1] = replace(last, arguments=last.arguments + event.arguments)
                else:
                    delta.tool_calls.append(event)
        if is_reasoning:
            self.num_reasoning_tokens += 1

    def _map_finish(self, reason: FinishReason) -> str:
        if reason == FinishReason.LENGTH:
            return "length"
        if reason == FinishReason.ABORT:
            return "abort"
        return "tool_calls" if self.saw_tool_call else "stop"

    def result(self) -> ChoiceResult:
        parsed = self.parser.result()
        return ChoiceResult(
            index=self.index,
            reasoning="".join(self.reasoning),
            content="".join(self.content),
            tool_calls=list(parsed.tool_calls),
            content_logprobs=self.logprobs,
            finish_reason=self.finish_reason or "stop",
            num_tokens=self.num_tokens,
            num_reasoning_tokens=self.num_reasoning_tokens,
        )


class HarmonyDecoder:
    """Decodes the n choices of one request; `all_stopped` tells the caller to abort the engine
    request early (every choice hit a stop string)."""

    def __init__(self, n: int, forced_prefix: list[int] | None, stop: list[str]) -> None:
        self._choices = [_ChoiceDecoder(i, forced_prefix, stop) for i in range(n)]

    def step(self, outputs: list[CompletionOutput]) -> list[ChoiceDelta]:
        return [self._choices[output.index].step(output) for output in outputs]

    @property
    def all_finished(self) -> bool:
        return all(choice.finish_reason is not None for choice in self._choices)

    def results(self) -> list[ChoiceResult]:
        return [choice.result() for choice in self._choices]

    @property
    def num_reasoning_tokens(self) -> int:
        return sum(choice.num_reasoning_tokens for choice in self._choices)
