"""/v1/responses output: harmony parser events → output items and the typed stream events that build them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from tkr_embed.harmony.events import ContentDelta, ParserEvent, ReasoningDelta, ToolCallDelta
from tkr_embed.protocol.openai_chat import TokenLogprobOut
from tkr_embed.protocol.openai_responses import (
    FunctionCallOutput,
    MessageOutput,
    OutputText,
    ReasoningOutput,
    ReasoningText,
    ResponseStatus,
)
from tkr_embed.protocol.openai_responses_events import (
    ContentPartEvent,
    FunctionCallArgumentsDeltaEvent,
    FunctionCallArgumentsDoneEvent,
    OutputItemEvent,
    OutputTextDeltaEvent,
    OutputTextDoneEvent,
    ReasoningTextDeltaEvent,
    ReasoningTextDoneEvent,
    StreamEvent,
)

OpenItem = ReasoningOutput | MessageOutput | FunctionCallOutput


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


@dataclass
class ResponseAssembler:
    """Parser events → output items (in order) and the stream events that build them.

    Invariant: at most one item is open; the `output_item.done` of every item comes before the next
    item's `output_item.added`, and the items of `output` equal those the done events carried.
    """

    output: list[OpenItem] = field(default_factory=list)
    num_reasoning_tokens: int = 0
    _sequence: int = 0
    _open: OpenItem | None = None
    _call_items: dict[int, FunctionCallOutput] = field(default_factory=dict)  # parser tool index → item
    # The open reasoning or message item's text, as pieces until it closes: adding each token's text to the
    # item's string would copy the whole string every token, quadratic in a long answer's length.
    _pieces: list[str] = field(default_factory=list)

    def next_sequence(self) -> int:
        self._sequence += 1
        return self._sequence - 1

    def feed(self, events: list[ParserEvent], logprob: TokenLogprobOut | None = None) -> list[StreamEvent]:
        """The events of one generated token; `logprob` (when asked for) is the token's, given to the text it wrote."""
        stream: list[StreamEvent] = []
        if any(isinstance(event, ReasoningDelta) for event in events):
            self.num_reasoning_tokens += 1
        for event in events:
            if isinstance(event, ReasoningDelta):
                stream += self._reasoning(event.text)
            elif isinstance(event, ContentDelta):
                stream += self._content(event.text, logprob)
                logprob = None  # one token, counted once
            elif isinstance(event, ToolCallDelta):
                stream += self._tool_call(event)
        return stream

    def finish(self, status: ResponseStatus) -> list[StreamEvent]:
        """Close the open item: completed, or incomplete when the response is."""
        return self._close("completed" if status == "completed" else "incomplete")

    def _reasoning(self, text: str) -> list[StreamEvent]:
        stream: list[StreamEvent] = []
        item = self._open
        if not isinstance(item, ReasoningOutput):
            stream += self._close("completed")
            item = ReasoningOutput(id=new_id("rs"), content=[ReasoningText()])
            stream += self._add(item)
        self._pieces.append(text)
        stream.append(
            ReasoningTextDeltaEvent(
                sequence_number=self.next_sequence(),
                item_id=item.id,
                output_index=self._index,
                content_index=0,
                delta=text,
            )
        )
        return stream

    def _content(self, text: str, logprob: TokenLogprobOut | None) -> list[StreamEvent]:
        stream: list[StreamEvent] = []
        item = self._open
        if not isinstance(item, MessageOutput):
            stream += self._close("completed")
            item = MessageOutput(id=new_id("msg"), content=[OutputText()])
            stream += self._add(item)
        logprobs = [logprob] if logprob is not None else []
        self._pieces.append(text)
        item.content[0].logprobs += logprobs
        stream.append(
            OutputTextDeltaEvent(
                sequence_number=self.next_sequence(),
                item_id=item.id,
                output_index=self._index,
                content_index=0,
                delta=text,
                logprobs=logprobs,
            )
        )
        return stream

    def _tool_call(self, event: ToolCallDelta) -> list[StreamEvent]:
        stream: list[StreamEvent] = []
        if event.id is not None:
            stream += self._close("completed")
            item = FunctionCallOutput(id=new_id("fc"), call_id=event.id, name=event.name or "")
            self._call_items[event.index] = item
            stream += self._add(item)
        item = self._call_items.get(event.index)
        if item is None or not event.arguments:
            return stream
        item.arguments += event.arguments
        stream.append(
            FunctionCallArgumentsDeltaEvent(
                sequence_number=self.next_sequence(),
                item_id=item.id,
                output_index=self.output.index(item),
                delta=event.arguments,
            )
        )
        return stream

    @property
    def _index(self) -> int:
        return len(self.output) - 1

    def _add(self, item: OpenItem) -> list[StreamEvent]:
        self.output.append(item)
        self._open = item
        stream: list[StreamEvent] = [
            OutputItemEvent(
                type="response.output_item.added",
                sequence_number=self.next_sequence(),
                output_index=self._index,
                item=item.model_copy(deep=True),
            )
        ]
        if not isinstance(item, FunctionCallOutput):
            stream.append(self._part_event("response.content_part.added", item))
        return stream

    def _close(self, status: str) -> list[StreamEvent]:
        item, self._open = self._open, None
        if item is None:
            return []
        item.status = status
        if not isinstance(item, FunctionCallOutput):
            item.content[0].text += "".join(self._pieces)
            self._pieces = []
        index = self.output.index(item)
        stream: list[StreamEvent] = []
        if isinstance(item, ReasoningOutput):
            stream.append(
                ReasoningTextDoneEvent(
                    sequence_number=self.next_sequence(),
                    item_id=item.id,
                    output_index=index,
                    content_index=0,
                    text=item.content[0].text,
                )
            )
            stream.append(self._part_event("response.content_part.done", item))
        elif isinstance(item, MessageOutput):
            stream.append(
                OutputTextDoneEvent(
                    sequence_number=self.next_sequence(),
                    item_id=item.id,
                    output_index=index,
                    content_index=0,
                    text=item.content[0].text,
                    logprobs=list(item.content[0].logprobs),
                )
            )
            stream.append(self._part_event("response.content_part.done", item))
        else:
            stream.append(
                FunctionCallArgumentsDoneEvent(
                    sequence_number=self.next_sequence(),
                    item_id=item.id,
                    output_index=index,
                    name=item.name,
                    arguments=item.arguments,
                )
            )
        stream.append(
            OutputItemEvent(
                type="response.output_item.done",
                sequence_number=self.next_sequence(),
                output_index=index,
                item=item.model_copy(deep=True),
            )
        )
        return stream

    def _part_event(self, kind: str, item: ReasoningOutput | MessageOutput) -> ContentPartEvent:
        return ContentPartEvent(
            type=kind,
            sequence_number=self.next_sequence(),
            item_id=item.id,
            output_index=self.output.index(item),
            content_index=0,
            part=item.content[0].model_copy(deep=True),
        )
