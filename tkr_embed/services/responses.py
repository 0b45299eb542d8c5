"""POST /v1/responses (stateless): input items → harmony prompt → engine → output items or stream events.

One `ResponseAssembler` turns the harmony parser's events into output items and the typed stream
events that build them, so the JSON answer and the stream always agree. The input conversion is in
`responses_input`, the assembler in `responses_assembler`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from tkr_embed.engine.outputs import FinishReason, RequestOutput
from tkr_embed.engine.sampling_params import SamplingParams
from tkr_embed.harmony.parser import HarmonyStreamParser
from tkr_embed.harmony.render import RenderedPrompt
from tkr_embed.protocol.openai_responses import (
    IncompleteDetails,
    InputTokensDetails,
    OutputTokensDetails,
    ReasoningEcho,
    Response,
    ResponseLifecycleEvent,
    ResponsesRequest,
    ResponseStatus,
    ResponseUsage,
    StreamEvent,
)
from tkr_embed.services.accounting import RequestCost, note_reasoning_tokens
from tkr_embed.services.admission import chat_chars, check_prompt_chars, check_prompt_tokens, default_max_tokens_cap
from tkr_embed.services.chat_prompt import render
from tkr_embed.services.context import ModelContext, unix_now
from tkr_embed.services.engine_stream import EngineStream
from tkr_embed.services.response_caching import CacheSlot, cache_slot, cached_or_created, cached_or_streamed
from tkr_embed.services.responses_assembler import ResponseAssembler, new_id
from tkr_embed.services.responses_input import chat_messages, check_stateless, harmony_tools

# The last stream event per status. A request the server stopped (shutdown) ends incomplete: its answer was cut short.
FINAL_EVENTS = {"completed": "response.completed", "incomplete": "response.incomplete"}


@dataclass
class PreparedResponse:
    response_id: str
    rendered: RenderedPrompt
    params: SamplingParams
    skeleton: Response  # the response object as of `response.created` (status in_progress)

    @property
    def cost(self) -> RequestCost:
        return RequestCost(1, len(self.rendered.token_ids), self.params.max_tokens or 0)


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
        """Checks, renders and tokenizes (seconds for a long input): call it through `ctx.off_loop`."""
        self.ctx.check_model(request.model)
        check_stateless(request)
        messages = chat_messages(request.input)
        check_prompt_chars(chat_chars(messages, request.instructions), "input")
        tools, tool_choice = harmony_tools(request)
        effort = (request.reasoning.effort if request.reasoning else None) or self.ctx.default_reasoning_effort
        rendered = render(
            messages,
            reasoning_effort=effort,
            tools=tools,
            tool_choice=tool_choice,
            instructions=request.instructions,
        )
        num_prompt = len(rendered.token_ids)
        check_prompt_tokens(num_prompt, "input")
        requested = request.max_output_tokens
        cap = default_max_tokens_cap([num_prompt], 1, requested, "max_output_tokens", "input")
        max_tokens = self.ctx.max_tokens_for(num_prompt, requested, "max_output_tokens", "input", cap)
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
            endpoint="/v1/responses",
            model=self.ctx.model_id,
            prompt_token_ids=prepared.rendered.token_ids,
            params=prepared.params,
            stream=stream,
            extra={"echoed": echoed},
        )

    async def create(self, request: ResponsesRequest) -> Response:
        prepared = await self.ctx.off_loop(self.prepare, request)
        return await cached_or_created(
            self._cache_slot(prepared, stream=False), lambda: self._create(prepared), prepared.cost
        )

    async def _create(self, prepared: PreparedResponse) -> Response:
        run = self._run(prepared)
        async with await self._open(run.prepared) as stream:
            async for update in stream:
                self._step(run, update)
        run.assembler.finish(self._status(run))
        note_reasoning_tokens(run.assembler.num_reasoning_tokens)
        return self._response(run)

    async def create_stream(self, request: ResponsesRequest) -> AsyncIterator[StreamEvent]:
        """Opens the engine request now (errors are raised before any byte is sent) and returns the
        events to send."""
        prepared = await self.ctx.off_loop(self.prepare, request)
        return await cached_or_streamed(
            self._cache_slot(prepared, stream=True),
            lambda: self._open(prepared),
            lambda stream: self._events(self._run(prepared), stream),
            prepared.cost,
        )

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
        if run.finish_reason in (FinishReason.LENGTH, FinishReason.ABORT):
            return "incomplete"
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
        return run.prepared.skeleton.model_copy(
            update={
                "status": status,
                "output": [item.model_copy(deep=True) for item in run.assembler.output],
                "usage": usage,
                "incomplete_details": _incomplete_details(run.finish_reason),
            }
        )

    async def _open(self, prepared: PreparedResponse) -> EngineStream:
        return await EngineStream.open(
            self.ctx.engine, prepared.response_id, list(prepared.rendered.token_ids), prepared.params
        )


def _incomplete_details(finish_reason: FinishReason | None) -> IncompleteDetails | None:
    """Why a response is incomplete: the token budget is the one reason the spec names; a stop at shutdown
    gives none."""
    if finish_reason == FinishReason.LENGTH:
        return IncompleteDetails(reason="max_output_tokens")
    if finish_reason == FinishReason.ABORT:
        return IncompleteDetails()
    return None
