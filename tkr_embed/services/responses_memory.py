"""Stored responses as /v1/responses uses them: who owns a request, the history `previous_response_id` continues,
storing an answer, and reading, listing and deleting stored ones.

A continuation renders the chain's history (every earlier input and output item, oldest first), the previous
response's input and output, then the new input. Harmony's rule on reasoning (`harmony/conversation.py`) then drops
the analysis of turns that ended in a final answer and keeps it within a tool-call chain. `instructions` are the new
request's alone, as in OpenAI's API. A response belongs to the key that created it: another key's id, an unknown one
and a deleted one answer the same 404.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import TypeAdapter

from tkr_embed.protocol.openai_response_items import (
    FunctionCallResult,
    InputMessage,
    InputTextContent,
    ResponseDeleted,
    ResponseItemList,
    StoredItem,
)
from tkr_embed.protocol.openai_responses import (
    FunctionCallItem,
    FunctionCallOutput,
    FunctionCallOutputItem,
    InputItem,
    MessageItem,
    MessageOutput,
    OutputText,
    ReasoningItemIn,
    ReasoningOutput,
    ReasoningText,
    Response,
    ResponseInput,
    ResponsesRequest,
    SummaryText,
)
from tkr_embed.services.accounting import current_account
from tkr_embed.services.errors import BadRequestError, ServiceError
from tkr_embed.storage.responses import ResponseStore, StoredResponse

ANONYMOUS_OWNER = "anonymous"  # the owner when no key identifies the caller (auth off), as the gateway names it
DEFAULT_LIST_LIMIT = 20
# The ids this server gives (resp_ and 32 hex digits) fit it; anything else is found nowhere, without a query
# (a NUL or an overlong id is no value a database column compares against).
RESPONSE_ID_PATTERN = re.compile(r"[A-Za-z0-9_\-]{1,64}")
MAX_LIST_LIMIT = 100

_HISTORY = TypeAdapter(list[InputItem])
_STORED_ITEMS = TypeAdapter(list[StoredItem])


class ResponseNotFoundError(ServiceError):
    """No stored response of the caller has this id: never stored, deleted, purged, or another key's."""

    status = 404
    error_type = "not_found_error"

    def __init__(self, response_id: str, param: str | None = None) -> None:
        super().__init__(f"Response with id {response_id!r} not found.", param, code="response_not_found")


def request_owner() -> str:
    """The caller's key id (the gateway's account scope), or the anonymous owner."""
    account = current_account()
    return account.scope if account is not None else ANONYMOUS_OWNER


@dataclass
class Continuation:
    """What storing does to one request: the history its prompt starts with and what its stored row will hold."""

    owner: str
    store: bool
    input_items: list[dict[str, Any]]  # this request's input, as listed (with ids)
    history: list[dict[str, Any]] = field(default_factory=list)  # the items before it, as listed
    previous_response_id: str | None = None

    def history_items(self) -> list[InputItem]:
        """The history as input items (rendered before the request's own input)."""
        return _HISTORY.validate_python(self.history)

    def record(self, response: Response) -> StoredResponse:
        return StoredResponse(
            id=response.id,
            owner=self.owner,
            created_at=datetime.fromtimestamp(response.created_at, UTC),
            response=response.model_dump(mode="json"),
            input_items=self.input_items,
            history=self.history,
            previous_response_id=self.previous_response_id,
        )


def _item_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def listed_item(item: InputItem) -> StoredItem:
    """An input item as stored and listed, with an id of its own."""
    if isinstance(item, MessageItem):
        if item.role == "assistant":
            return MessageOutput(id=_item_id("msg"), content=[OutputText(text=item.text())], status="completed")
        return InputMessage(id=_item_id("msg"), role=item.role, content=[InputTextContent(text=item.text())])
    if isinstance(item, FunctionCallItem):
        return FunctionCallOutput(
            id=_item_id("fc"), call_id=item.call_id, name=item.name, arguments=item.arguments, status="completed"
        )
    if isinstance(item, FunctionCallOutputItem):
        return FunctionCallResult(id=_item_id("fco"), call_id=item.call_id, output=item.text())
    assert isinstance(item, ReasoningItemIn)
    return ReasoningOutput(
        id=_item_id("rs"),
        summary=[SummaryText(text=part.text) for part in item.summary],
        content=[ReasoningText(text=part.text) for part in item.content or []],
        status="completed",
    )


def listed_input(request_input: ResponseInput) -> list[dict[str, Any]]:
    items: Sequence[InputItem] = (
        [MessageItem(role="user", content=request_input)] if isinstance(request_input, str) else request_input
    )
    return [listed_item(item).model_dump(mode="json") for item in items]


class ResponseMemory:
    """The stored-response side of /v1/responses. `store` is None on a server without a database (an app built
    without the gateway): nothing is stored there, and `store: true` is refused."""

    def __init__(self, store: ResponseStore | None) -> None:
        self.store = store

    async def continuation(self, request: ResponsesRequest) -> Continuation:
        """What storing means for this request; the previous response is loaded here (404 if the caller has
        none of that id). `store` defaults to true, as in OpenAI's API."""
        if request.store and self.store is None:
            raise BadRequestError("store=true needs the server's database, and this server runs without one", "store")
        owner = request_owner()
        continuation = Continuation(
            owner=owner,
            store=self.store is not None and request.store is not False,
            input_items=listed_input(request.input),
            previous_response_id=request.previous_response_id,
        )
        if request.previous_response_id is not None:
            previous = await self._find(request.previous_response_id, owner, "previous_response_id")
            output = previous.response.get("output", [])
            continuation.history = [*previous.history, *previous.input_items, *output]
        return continuation

    async def remember(self, continuation: Continuation, response: Response) -> None:
        """Store the response (before it is returned: a client may continue it at once)."""
        if continuation.store and self.store is not None:
            await self.store.save(continuation.record(response))

    def remember_soon(self, continuation: Continuation, response: Response) -> None:
        """Store the response off the caller's task, which is being cancelled (a stream the client left)."""
        if continuation.store and self.store is not None:
            self.store.save_soon(continuation.record(response))

    async def retrieve(self, response_id: str) -> Response:
        stored = await self._find(response_id, request_owner())
        return Response.model_validate(stored.response)

    async def delete(self, response_id: str) -> ResponseDeleted:
        if (
            self.store is None
            or not RESPONSE_ID_PATTERN.fullmatch(response_id)
            or not await self.store.delete(response_id, request_owner())
        ):
            raise ResponseNotFoundError(response_id)
        return ResponseDeleted(id=response_id)

    async def input_items(
        self,
        response_id: str,
        *,
        limit: int = DEFAULT_LIST_LIMIT,
        order: Literal["asc", "desc"] = "desc",
        after: str | None = None,
        before: str | None = None,
    ) -> ResponseItemList:
        """This response's own input items (not the history it continued), a page of them, as OpenAI lists them:
        `after` and `before` are item ids of this order."""
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise BadRequestError(f"limit must be from 1 to {MAX_LIST_LIMIT}", "limit")
        stored = await self._find(response_id, request_owner())
        items = _STORED_ITEMS.validate_python(stored.input_items)
        if order == "desc":
            items.reverse()
        ids = [item.id for item in items]
        for name, cursor in (("after", after), ("before", before)):
            if cursor is not None and cursor not in ids:
                raise BadRequestError(f"{name} names no input item of response {response_id!r}", name)
        start = ids.index(after) + 1 if after is not None else 0
        end = ids.index(before) if before is not None else len(items)
        window = items[start:end]
        page = window[-limit:] if before is not None and after is None else window[:limit]
        return ResponseItemList(
            data=page,
            first_id=page[0].id if page else None,
            last_id=page[-1].id if page else None,
            has_more=len(window) > len(page),
        )

    async def _find(self, response_id: str, owner: str, param: str | None = None) -> StoredResponse:
        stored = None
        if self.store is not None and RESPONSE_ID_PATTERN.fullmatch(response_id):
            stored = await self.store.get(response_id, owner)
        if stored is None:
            raise ResponseNotFoundError(response_id, param)
        return stored
