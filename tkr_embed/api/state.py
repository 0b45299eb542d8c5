"""What the running server holds: settings, engine, services; built in the app's lifespan."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from tkr_embed.config import Settings
from tkr_embed.engine.client import EngineClient
from tkr_embed.engine.tokenizer import Tokenizer
from tkr_embed.services.chat_completions import ChatCompletionService
from tkr_embed.services.completions import CompletionService
from tkr_embed.services.context import ModelContext
from tkr_embed.services.native import NativeService
from tkr_embed.services.responses_memory import ResponseMemory
from tkr_embed.storage.responses import ResponseStore


@dataclass
class ServerState:
    settings: Settings
    engine: EngineClient
    tokenizer: Tokenizer
    model_path: str | None
    is_demo: bool
    context: ModelContext = field(init=False)
    chat: ChatCompletionService = field(init=False)
    completions: CompletionService = field(init=False)
    native: NativeService = field(init=False)
    # Set by the extension that owns the database (the gateway); None: responses are not stored.
    response_store: ResponseStore | None = None
    started_at: float = field(default_factory=time.monotonic)
    started_at_unix: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        info = self.engine.info
        context_length = info.max_model_len
        if self.settings.engine.max_model_len is not None:
            context_length = min(context_length, self.settings.engine.max_model_len)
        self.context = ModelContext(
            engine=self.engine,
            tokenizer=self.tokenizer,
            model_id=self.settings.model.name or info.model_name,
            context_length=context_length,
            default_reasoning_effort=self.settings.model.default_reasoning_effort,
            aliases=tuple(self.settings.model.aliases),
        )
        self.chat = ChatCompletionService(self.context)
        self.completions = CompletionService(self.context)
        self.native = NativeService(self.context)

    @property
    def response_memory(self) -> ResponseMemory:
        return ResponseMemory(self.response_store)

    @property
    def model_id(self) -> str:
        return self.context.model_id

    @property
    def uptime_s(self) -> float:
        return time.monotonic() - self.started_at
