"""POST /v1/responses (stateless): input items → harmony prompt → engine → output items or stream events.

One `ResponseAssembler` turns the harmony parser's events into output items and the typed stream
events that build them, so the JSON answer and the stream always agree.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from tkr_embed.engine.outputs import FinishReason, RequestOutput
from tkr_embed.engine.sampling_params import SamplingParams
from tkr_embed.harmony.conversation import FUNCTION_NAME_PATTERN
from tkr_embed.harmony.events import ContentDelta, ParserEvent, ReasoningDelta, ToolCallDelta
from tkr_embed.harmony.parser import HarmonyStreamParser
from tkr_embed.harmony.render import RenderedPrompt
from tkr_embed.harmony.types import ChatMessage, FunctionTool, ToolCall, ToolChoice
from tkr_embed.protocol.openai_responses import (
    ContentPartEvent,
    FunctionCallArgumentsDeltaEvent,
    FunctionCallArgumentsDoneEvent,
    FunctionCallItem,
    FunctionCallOutput,
    FunctionCallOutputItem,
    FunctionToolChoice,
    IncompleteDetails,
    InputItem,
    InputTokensDetails,
    MessageItem,
    MessageOutput,
    OutputItemEvent,
    OutputText,
    OutputTextDeltaEvent,
    OutputTextDoneEvent,
    OutputTokensDetails,
    ReasoningEcho,
    ReasoningItemIn,
    ReasoningOutput,
    ReasoningText,
    ReasoningTextDeltaEvent,
    ReasoningTextDoneEvent,
    Response,
    ResponseLifecycleEvent,
    ResponsesRequest,
    ResponseStatus,
    ResponseUsage,
    StreamEvent,
)
from tkr_embed.services.accounting import note_reasoning_tokens
from tkr_embed.services.chat_prompt import render
from tkr_embed.services.context import ModelContext, unix_now
from tkr_embed.services.engine_stream import EngineStream
from tkr_embed.services.errors import BadRequestError
from tkr_embed.services.response_caching import CacheSlot, cache_slot, replay

OpenItem = ReasoningOutput | MessageOutput | FunctionCallOutput
# The last stream event per status; an aborted request (server shutdown) ends as failed.
FINAL_EVENTS = {"completed": "response.completed", "incomplete": "response.incomplete", "cancelled": "response.failed"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


# -- request → harmony ----------------------------------------------------------------------------


def chat_messages(items: str | Sequence[InputItem]) -> list[ChatMessage]:
    """Input items as harmony chat messages. Consecutive assistant items (reasoning, a message,
    function calls) form one assistant turn; a function_call_output must answer an earlier call."""
    if isinstance(items, str):
        return [ChatMessage(role="user", content=items)]
    if not items:
        raise BadRequestError("input must hold at least one item", "input")
    messages: list[ChatMessage] = []
    turn: ChatMessage | None = None           # the assistant turn being gathered
    call_names: dict[str, str] = {}
    for index, item in enumerate(items):
        if isinstance(item, ReasoningItemIn):
            if turn is None or turn.content is not None or turn.tool_calls:
                turn = _new_turn(messages)
            turn.reasoning = (turn.reasoning or "") + item.text()
        elif isinstance(item, FunctionCallItem):
            if not FUNCTION_NAME_PATTERN.fullmatch(item.name):
                raise BadRequestError(
                    "a function name must be 1 to 64 letters, digits, underscores or dashes", f"input[{index}].name"
                )
            turn = turn or _new_turn(messages)
            turn.tool_calls.append(ToolCall(id=item.call_id, name=item.name, arguments=item.arguments))
            call_names[item.call_id] = item.name
        elif isinstance(item, MessageItem) and item.role == "assistant":
            if turn is None or turn.content is not None or turn.tool_calls:
                turn = _new_turn(messages)
            turn.content = item.text()
        elif isinstance(item, FunctionCallOutputItem):
            turn = None
            if item.call_id not in call_names:
                raise BadRequestError(
                    f"function_call_output answers call_id {item.call_id!r}, which no earlier function_call "
                    "item made (this server is stateless: send the function_call items back in input)",
                    f"input[{index}].call_id",
                )
            messages.append(
                ChatMessage(role="tool", content=item.text(), tool_call_id=item.call_id, name=call_names[item.call_id])
            )
        else:
            turn = None
            messages.append(ChatMessage(role=item.role, content=item.text()))
    return messages


def _new_turn(messages: list[ChatMessage]) -> ChatMessage:
    turn = ChatMessage(role="assistant")
    messages.append(turn)
    return turn


def harmony_tools(request: ResponsesRequest) -> tuple[list[FunctionTool] | None, ToolChoice | None]:
    tools = [FunctionTool(t.name, t.description, t.parameters) for t in request.tools or []] or None
    choice = request.tool_choice
    if choice is None:
        return tools, None
    names = {tool.name for tool in tools or []}
    if isinstance(choice, FunctionToolChoice):
        if choice.name not in names:
            raise BadRequestError(f"tool_choice names the function {choice.name!r}, which is not in tools", "tool_choice")
        return tools, ToolChoice(mode="function", function_name=choice.name)
    if choice == "required" and not tools:
        raise BadRequestError("tool_choice 'required' needs at least one tool in tools", "tool_choice")
    return tools, ToolChoice(mode=choice)


def check_stateless(request: ResponsesRequest) -> None:
    if request.previous_response_id is not None:
        raise BadRequestError(
            "previous_response_id is not supported: this server stores no responses; send the earlier "
            "output items back in input", "previous_response_id",
        )
    if request.store:
        raise BadRequestError("store=true is not supported: this server stores no responses", "store")
    if request.background:
        raise BadRequestError("background=true is not supported", "background")


# -- engine events → output items -----------------------------------------------------------------


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
    _call_items: dict[int, FunctionCallOutput] = field(default_factory=dict)   # parser tool index → item

    def next_sequence(self) -> int:
        self._sequence += 1
        return self._sequence - 1

    def feed(self, events: list[ParserEvent]) -> list[StreamEvent]:
        """The events of one generated token."""
        stream: list[StreamEvent] = []
        if any(isinstance(event, ReasoningDelta) for event in events):
            self.num_reasoning_tokens += 1
        for event in events:
            if isinstance(event, ReasoningDelta):
                stream += self._reasoning(event.text)
            elif isinstance(event, ContentDelta):
                stream += self._content(event.text)
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
        item.content[0].text += text
        stream.append(ReasoningTextDeltaEvent(
            sequence_number=self.next_sequence(), item_id=item.id, output_index=self._index, content_index=0,
            delta=text,
        ))
        return stream

    def _content(self, text: str) -> list[StreamEvent]:
        stream: list[StreamEvent] = []
        item = self._open
        if not isinstance(item, MessageOutput):
            stream += self._close("completed")
            item = MessageOutput(id=new_id("msg"), content=[OutputText()])
            stream += self._add(item)
        item.content[0].text += text
        stream.append(OutputTextDeltaEvent(
            sequence_number=self.next_sequence(), item_id=item.id, output_index=self._index, content_index=0,
            delta=text,
        ))
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
        stream.append(FunctionCallArgumentsDeltaEvent(
            sequence_number=self.next_sequence(), item_id=item.id, output_index=self.output.index(item),
            delta=event.arguments,
        ))
        return stream

    @property
    def _index(self) -> int:
        return len(self.output) - 1

    def _add(self, item: OpenItem) -> list[StreamEvent]:
        self.output.append(item)
        self._open = item
        stream: list[StreamEvent] = [OutputItemEvent(
            type="response.output_item.added", sequence_number=self.next_sequence(), output_index=self._index,
            item=item.model_copy(deep=True),
        )]
        if not isinstance(item, FunctionCallOutput):
            stream.append(self._part_event("response.content_part.added", item))
        return stream

    def _close(self, status: str) -> list[StreamEvent]:
        item, self._open = self._open, None
        if item is None:
            return []
        item.status = status
        index = self.output.index(item)
        stream: list[StreamEvent] = []
        if isinstance(item, ReasoningOutput):
            stream.append(ReasoningTextDoneEvent(
                sequence_number=self.next_sequence(), item_id=item.id, output_index=index, content_index=0,
                text=item.content[0].text,
            ))
            stream.append(self._part_event("response.content_part.done", item))
        elif isinstance(item, MessageOutput):
            stream.append(OutputTextDoneEvent(
                sequence_number=self.next_sequence(), item_id=item.id, output_index=index, content_index=0,
                text=item.content[0].text,
            ))
            stream.append(self._part_event("response.content_part.done", item))
        else:
            stream.append(FunctionCallArgumentsDoneEvent(
                sequence_number=self.next_sequence(), item_id=item.id, output_index=index, name=item.name,
                arguments=item.arguments,
            ))
        stream.append(OutputItemEvent(
            type="response.output_item.done", sequence_number=self.next_sequence(), output_index=index,
            item=item.model_copy(deep=True),
        ))
        return stream

    def _part_event(self, kind: str, item: ReasoningOutput | MessageOutput) -> ContentPartEvent:
        return ContentPartEvent(
            type=kind, sequence_number=self.next_sequence(), item_id=item.id, output_index=self.output.index(item),
            content_index=0, part=item.content[0].model_copy(),
        )


# -- the service ----------------------------------------------------------------------------------


@dataclass
class PreparedResponse:
    response_id: str
    rendered: RenderedPrompt
    params: SamplingParams
    skeleton: Response        # the response object as of `response.created` (status in_progress)


@dataclass
class _Run:
    """One response being generated."""

    prepared: PreparedResponse
    parser: HarmonyStreamParser
    assembler: ResponseAssembler = field(default_factory=ResponseAssembler)
    num_output_tokens: int = 0
    num_cached: int = 0
    finish_reason: FinishReason | None = None


class ResponsesService:
    def __init__(self, ctx: ModelContext) -> None:
        self.ctx = ctx

    def prepare(self, request: ResponsesRequest) -> PreparedResponse:
        self.ctx.check_model(request.model)
        check_stateless(request)
        tools, tool_choice = harmony_tools(request)
        effort = (request.reasoning.effort if request.reasoning else None) or self.ctx.default_reasoning_effort
        rendered = render(
            chat_messages(request.input), reasoning_effort=effort, tools=tools, tool_choice=tool_choice,
            instructions=request.instructions,
        )
        max_tokens = self.ctx.max_tokens_for(
            len(rendered.token_ids), request.max_output_tokens, "max_output_tokens", "input"
        )
        temperature = 1.0 if request.temperature is None else request.temperature
        top_p = 1.0 if request.top_p is None else request.top_p
        params = SamplingParams(
            max_tokens=max_tokens, temperature=temperature, top_p=top_p, stop_token_ids=list(rendered.stop_token_ids)
        )
        response_id = new_id("resp")
        skeleton = Response(
            id=response_id,
            created_at=unix_now(),
            status="in_progress",
            model=self.ctx.model_id,
            instructions=request.instructions,
            max_output_tokens=request.max_output_tokens,
            temperature=temperature,
            top_p=top_p,
            tools=list(request.tools or []),
            tool_choice=request.tool_choice or "auto",
            parallel_tool_calls=request.parallel_tool_calls if request.parallel_tool_calls is not None else True,
            reasoning=ReasoningEcho(effort=effort, summary=request.reasoning.summary if request.reasoning else None),
            metadata=request.metadata or {},
            user=request.user,
        )
        return PreparedResponse(response_id, rendered, params, skeleton)

    def _cache_slot(self, prepared: PreparedResponse, stream: bool) -> CacheSlot | None:
        # Every echoed request field shapes the answer too; a hit replays the first answer (its id included).
        echoed = prepared.skeleton.model_dump(mode="json", exclude={"id", "created_at"})
        return cache_slot(
            endpoint="/v1/responses", model=self.ctx.model_id, prompt_token_ids=prepared.rendered.token_ids,
            params=prepared.params, stream=stream, extra={"echoed": echoed},
        )

    async def create(self, request: ResponsesRequest) -> Response:
        prepared = self.prepare(request)
        slot = self._cache_slot(prepared, stream=False)
        if slot is not None and (cached := slot.lookup()) is not None:
            return cached
        run = self._run(prepared)
        async with await self._open(run.prepared) as stream:
            async for update in stream:
                self._step(run, update)
        run.assembler.finish(self._status(run))
        note_reasoning_tokens(run.assembler.num_reasoning_tokens)
        response = self._response(run)
        if slot is not None:
            slot.store(response)
        return response

    async def create_stream(self, request: ResponsesRequest) -> AsyncIterator[StreamEvent]:
        """Opens the engine request now (errors are raised before any byte is sent) and returns the
        events to send."""
        prepared = self.prepare(request)
        slot = self._cache_slot(prepared, stream=True)
        if slot is not None and (cached := slot.lookup()) is not None:
            return replay(cached)
        stream = await self._open(prepared)
        events = self._events(self._run(prepared), stream)
        return slot.recording(events) if slot is not None else events

    async def _events(self, run: _Run, stream: EngineStream) -> AsyncIterator[StreamEvent]:
        assembler = run.assembler
        skeleton = run.prepared.skeleton
        for kind in ("response.created", "response.in_progress"):
            yield ResponseLifecycleEvent(type=kind, sequence_number=assembler.next_sequence(), response=skeleton)
        async with stream:
            async for update in stream:
                for event in self._step(run, update):
                    yield event
        status = self._status(run)
        for event in assembler.finish(status):
            yield event
        note_reasoning_tokens(assembler.num_reasoning_tokens)
        yield ResponseLifecycleEvent(
            type=FINAL_EVENTS[status], sequence_number=assembler.next_sequence(), response=self._response(run)
        )

    def _run(self, prepared: PreparedResponse) -> _Run:
        return _Run(prepared, HarmonyStreamParser(forced_prefix=prepared.rendered.forced_prefix))

    def _step(self, run: _Run, update: RequestOutput) -> list[StreamEvent]:
        run.num_cached = update.num_cached_prompt_tokens
        events: list[StreamEvent] = []
        for output in update.outputs:
            for token_id in output.new_token_ids:
                run.num_output_tokens += 1
                events += run.assembler.feed(run.parser.feed(token_id))
            if output.finish_reason is not None:
                run.finish_reason = output.finish_reason
        return events

    def _status(self, run: _Run) -> ResponseStatus:
        if run.finish_reason == FinishReason.LENGTH:
            return "incomplete"
        if run.finish_reason == FinishReason.ABORT:
            return "cancelled"
        return "completed"

    def _response(self, run: _Run) -> Response:
        status = self._status(run)
        num_input = len(run.prepared.rendered.token_ids)
        usage = ResponseUsage(
            input_tokens=num_input,
            input_tokens_details=InputTokensDetails(cached_tokens=run.num_cached),
            output_tokens=run.num_output_tokens,
            output_tokens_details=OutputTokensDetails(reasoning_tokens=run.assembler.num_reasoning_tokens),
            total_tokens=num_input + run.num_output_tokens,
        )
        return run.prepared.skeleton.model_copy(update={
            "status": status,
            "output": [item.model_copy(deep=True) for item in run.assembler.output],
            "usage": usage,
            "incomplete_details": IncompleteDetails(reason="max_output_tokens") if status == "incomplete" else None,
        })

    async def _open(self, prepared: PreparedResponse) -> EngineStream:
        return await EngineStream.open(
            self.ctx.engine, prepared.response_id, list(prepared.rendered.token_ids), prepared.params
        )
