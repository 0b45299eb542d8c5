"""POST /v1/responses: input items (after a stored response's, with previous_response_id) → harmony prompt → engine
→ output items or stream events, stored when the request asks (the default).

One `ResponseAssembler` turns the harmony parser's events into output items and the typed stream
events that build them, so the JSON answer and the stream always agree. The input conversion is in
`responses_input`, the assembler in `responses_assembler`, storing and continuing in `responses_memory`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from functools import partial

from tkr_embed.engine.errors import EngineError
from tkr_embed.engine.outputs import FinishReason, RequestOutput, TokenLogprob
from tkr_embed.engine.sampling_params import SamplingParams
from tkr_embed.harmony.events import ContentDelta, ParserEvent
from tkr_embed.harmony.parser import HarmonyStreamParser
from tkr_embed.harmony.render import RenderedPrompt
from tkr_embed.protocol.openai_chat import TokenLogprobOut
from tkr_embed.protocol.openai_responses import (
    IncompleteDetails,
    InputTokensDetails,
    OutputTokensDetails,
    ReasoningEcho,
    ReasoningEffort,
    Response,
    ResponseError,
    ResponsesRequest,
    ResponseStatus,
    ResponseUsage,
    TextConfig,
)
from tkr_embed.protocol.openai_responses_events import (
    ErrorEvent,
    ResponseLifecycleEvent,
    StreamErrorDetail,
    StreamEvent,
)
from tkr_embed.services.accounting import RequestCost, note_reasoning_tokens, reasoning_token_cap
from tkr_embed.services.admission import chat_chars, check_prompt_chars, check_prompt_tokens, default_max_tokens_cap
from tkr_embed.services.chat_prompt import render
from tkr_embed.services.context import ModelContext, unix_now
from tkr_embed.services.engine_stream import EngineStream
from tkr_embed.services.errors import ServiceError
from tkr_embed.services.logprobs import chat_logprobs
from tkr_embed.services.response_caching import CacheSlot, cache_slot, cached_or_created, cached_or_streamed
from tkr_embed.services.responses_assembler import ResponseAssembler, new_id
from tkr_embed.services.responses_input import chat_messages, check_stateless, harmony_tools
from tkr_embed.services.responses_memory import Continuation, ResponseMemory
from tkr_embed.services.structured_output import answer_format, constrained_tools

# The last stream event per status. A request the server stopped (shutdown) ends incomplete: its answer was cut short.
FINAL_EVENTS = {"completed": "response.completed", "incomplete": "response.incomplete"}
# The events that end a stream, each carrying the response as it is stored.
TERMINAL_EVENTS = frozenset({*FINAL_EVENTS.values(), "response.failed"})
# The `include` value that asks for the answer's token logprobs.
LOGPROBS_INCLUDE = "message.output_text.logprobs"


@dataclass
class PreparedResponse:
    response_id: str
    rendered: RenderedPrompt
    params: SamplingParams
    skeleton: Response  # the response object as of `response.created` (status in_progress)
    continuation: Continuation

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
    ended: bool = False  # its last event (completed, incomplete or failed) was sent


class ResponsesService:
    def __init__(self, ctx: ModelContext, memory: ResponseMemory | None = None) -> None:
        self.ctx = ctx
        self.memory = memory or ResponseMemory(None)

    def prepare(self, request: ResponsesRequest, continuation: Continuation) -> PreparedResponse:
        """Checks, renders and tokenizes (seconds for a long input): call it through `ctx.off_loop`."""
        self.ctx.check_model(request.model)
        check_stateless(request)
        messages = chat_messages(request.input, continuation.history_items())
        check_prompt_chars(chat_chars(messages, request.instructions), "input")
        tools, tool_choice = harmony_tools(request)
        strict = [bool(tool.strict) for tool in request.tools or []]
        tools = constrained_tools(tools, strict, tool_choice, lambda i: f"tools[{i}].parameters")
        text_format = request.text.format if request.text is not None else None
        effort = (request.reasoning.effort if request.reasoning else None) or self.ctx.default_reasoning_effort
        rendered = render(
            messages,
            reasoning_effort=effort,
            tools=tools,
            tool_choice=tool_choice,
            instructions=request.instructions,
            response_format=answer_format(text_format, "text.format"),
        )
        num_prompt = len(rendered.token_ids)
        check_prompt_tokens(num_prompt, "input")
        requested = request.max_output_tokens
        cap = default_max_tokens_cap([num_prompt], 1, requested, "max_output_tokens", "input")
        max_tokens = self.ctx.max_tokens_for(num_prompt, requested, "max_output_tokens", "input", cap)
        params = SamplingParams(
            max_tokens=max_tokens,
            temperature=1.0 if request.temperature is None else request.temperature,
            top_p=1.0 if request.top_p is None else request.top_p,
            presence_penalty=request.presence_penalty or 0.0,
            frequency_penalty=request.frequency_penalty or 0.0,
            seed=request.seed,
            logprobs=_logprobs(request),
            stop_token_ids=list(rendered.stop_token_ids),
            constraint=rendered.constraint_for(max_tokens, reasoning_token_cap()),
        )
        response_id = new_id("resp")
        skeleton = self._echo(request, response_id, effort, params, continuation)
        return PreparedResponse(response_id, rendered, params, skeleton, continuation)

    def _echo(
        self,
        request: ResponsesRequest,
        response_id: str,
        effort: ReasoningEffort,
        params: SamplingParams,
        continuation: Continuation,
    ) -> Response:
        """The response object before any output: the request's settings as they are applied."""
        return Response(
            id=response_id,
            created_at=unix_now(),
            status="in_progress",
            model=self.ctx.model_id,
            instructions=request.instructions,
            tools=list(request.tools or []),
            tool_choice=request.tool_choice or "auto",
            truncation=request.truncation or "disabled",
            parallel_tool_calls=request.parallel_tool_calls if request.parallel_tool_calls is not None else True,
            text=request.text or TextConfig(),
            top_p=params.top_p,
            presence_penalty=params.presence_penalty,
            frequency_penalty=params.frequency_penalty,
            top_logprobs=request.top_logprobs or 0,
            temperature=params.temperature,
            reasoning=ReasoningEcho(effort=effort, summary=request.reasoning.summary if request.reasoning else None),
            user=request.user,
            max_output_tokens=request.max_output_tokens,
            max_tool_calls=request.max_tool_calls,
            metadata=request.metadata or {},
            safety_identifier=request.safety_identifier,
            prompt_cache_key=request.prompt_cache_key,
            previous_response_id=request.previous_response_id,
            store=continuation.store,
        )

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
        continuation = await self.memory.continuation(request)
        prepared = await self.ctx.off_loop(partial(self.prepare, continuation=continuation), request)
        response = await cached_or_created(
            self._cache_slot(prepared, stream=False), lambda: self._create(prepared), prepared.cost
        )
        await self.memory.remember(continuation, response)
        return response

    async def _create(self, prepared: PreparedResponse) -> Response:
        run = self._run(prepared)
        async with await self._open(run.prepared) as stream:
            async for update in stream:
                self._step(run, update)
        status = self._status(run)
        run.assembler.finish(status)
        note_reasoning_tokens(run.assembler.num_reasoning_tokens)
        return self._response(run, status)

    async def create_stream(self, request: ResponsesRequest) -> AsyncIterator[StreamEvent]:
        """Opens the engine request now (errors are raised before any byte is sent) and returns the
        events to send."""
        continuation = await self.memory.continuation(request)
        prepared = await self.ctx.off_loop(partial(self.prepare, continuation=continuation), request)
        events = await cached_or_streamed(
            self._cache_slot(prepared, stream=True),
            lambda: self._open(prepared),
            lambda stream: self._events(self._run(prepared), stream),
            prepared.cost,
        )
        return self._remembered(events, continuation)

    async def _remembered(
        self, events: AsyncIterator[StreamEvent], continuation: Continuation
    ) -> AsyncIterator[StreamEvent]:
        """The events, with the response stored before its last event is sent (replayed from the cache too)."""
        async with aclosing(events):
            async for event in events:
                if isinstance(event, ResponseLifecycleEvent) and event.type in TERMINAL_EVENTS:
                    await self.memory.remember(continuation, event.response)
                yield event

    async def _events(self, run: _Run, stream: EngineStream) -> AsyncIterator[StreamEvent]:
        events = self._generated_events(run, stream)
        try:
            async with aclosing(events):
                async for event in events:
                    run.ended = run.ended or event.type in TERMINAL_EVENTS
                    yield event
        finally:
            if not run.ended:  # the client left: what was written is kept, incomplete
                run.assembler.finish("incomplete")
                self.memory.remember_soon(run.prepared.continuation, self._response(run, "incomplete"))

    async def _generated_events(self, run: _Run, stream: EngineStream) -> AsyncIterator[StreamEvent]:
        assembler = run.assembler
        for kind in ("response.created", "response.in_progress"):
            yield self._lifecycle(kind, run, "in_progress")
        try:
            async with stream:
                async for update in stream:
                    for event in self._step(run, update):
                        yield event
        except (EngineError, ServiceError) as exc:
            # The items so far end incomplete and the response failed; the error itself follows (the route's
            # `error` event), and nothing of a failed stream is cached.
            for event in assembler.finish("failed"):
                yield event
            yield self._lifecycle(
                "response.failed", run, "failed", ResponseError(code=error_code(exc), message=str(exc))
            )
            raise
        status = self._status(run)
        for event in assembler.finish(status):
            yield event
        note_reasoning_tokens(assembler.num_reasoning_tokens)
        yield self._lifecycle(FINAL_EVENTS[status], run, status)

    def _lifecycle(
        self, kind: str, run: _Run, status: ResponseStatus, error: ResponseError | None = None
    ) -> ResponseLifecycleEvent:
        return ResponseLifecycleEvent(
            type=kind, sequence_number=run.assembler.next_sequence(), response=self._response(run, status, error)
        )

    def _run(self, prepared: PreparedResponse) -> _Run:
        return _Run(prepared, HarmonyStreamParser(forced_prefix=prepared.rendered.forced_prefix))

    def _step(self, run: _Run, update: RequestOutput) -> list[StreamEvent]:
        run.num_cached = update.num_cached_prompt_tokens
        events: list[StreamEvent] = []
        for output in update.outputs:
            logprobs = output.new_logprobs or []
            for position, token_id in enumerate(output.new_token_ids):
                run.num_output_tokens += 1
                parsed = run.parser.feed(token_id)
                logprob = logprobs[position] if position < len(logprobs) else None
                events += run.assembler.feed(parsed, self._text_logprob(run, parsed, logprob))
            if output.finish_reason is not None:
                run.finish_reason = output.finish_reason
        return events

    def _text_logprob(
        self, run: _Run, parsed: list[ParserEvent], logprob: TokenLogprob | None
    ) -> TokenLogprobOut | None:
        """A token's logprob in the wire shape, for a token that wrote answer text (reasoning has none)."""
        top_k = run.prepared.params.logprobs
        if top_k is None or logprob is None or not any(isinstance(event, ContentDelta) for event in parsed):
            return None
        return chat_logprobs(self.ctx.tokenizer, [logprob], top_k).content[0]

    def _status(self, run: _Run) -> ResponseStatus:
        if run.finish_reason in (FinishReason.LENGTH, FinishReason.ABORT):
            return "incomplete"
        return "completed"

    def _response(self, run: _Run, status: ResponseStatus, error: ResponseError | None = None) -> Response:
        """The response object as of now: the one builder of the JSON answer and of every streamed
        `response.*` event, so that they carry the same fields."""
        num_input = len(run.prepared.rendered.token_ids)
        usage = None
        if status != "in_progress":
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
                "completed_at": unix_now() if status == "completed" else None,
                "output": [item.model_copy(deep=True) for item in run.assembler.output],
                "usage": usage,
                "incomplete_details": _incomplete_details(run.finish_reason) if status == "incomplete" else None,
                "error": error,
            }
        )

    async def _open(self, prepared: PreparedResponse) -> EngineStream:
        return await EngineStream.open(
            self.ctx.engine, prepared.response_id, list(prepared.rendered.token_ids), prepared.params
        )


def _incomplete_details(finish_reason: FinishReason | None) -> IncompleteDetails:
    """Why a response is incomplete: its token budget ran out, or the server stopped it (at shutdown)."""
    return IncompleteDetails(reason="max_output_tokens" if finish_reason == FinishReason.LENGTH else "interrupted")


def _logprobs(request: ResponsesRequest) -> int | None:
    """SamplingParams.logprobs: the alternatives per token, or None when the request wants no logprobs."""
    if LOGPROBS_INCLUDE in (request.include or []) or request.top_logprobs:
        return request.top_logprobs or 0
    return None


def error_code(exc: EngineError | ServiceError) -> str:
    """The code of an error that ended a stream after it started."""
    if isinstance(exc, EngineError):
        return "engine_unavailable"
    return exc.code or exc.error_type


def error_event(exc: EngineError | ServiceError, sequence_number: int) -> ErrorEvent:
    """The `error` event of a stream that an error ended after it started."""
    error_type = "server_error" if isinstance(exc, EngineError) else exc.error_type
    param = None if isinstance(exc, EngineError) else exc.param
    code = error_code(exc)
    detail = StreamErrorDetail(type=error_type, code=code, message=str(exc), param=param)
    return ErrorEvent(sequence_number=sequence_number, code=code, message=str(exc), param=param, error=detail)
