"""Wire types of POST /tokenize, POST /detokenize and GET /tokenizer_info, in the shapes `vllm serve` uses.

/tokenize takes either a `prompt` (text, encoded as /v1/completions encodes it) or chat `messages` (rendered as
/v1/chat/completions renders them); the body's `messages` key decides which.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictInt,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from tkr_embed.protocol.limits import check_item_count, request_limits
from tkr_embed.protocol.openai_chat import ChatMessageIn, NamedToolChoice, ReasoningEffort, ToolDefinition
from tkr_embed.protocol.openai_common import OpenAIRequest


class TokenizeCompletionRequest(OpenAIRequest):
    model: str | None = None
    prompt: str
    # Accepted for vLLM's clients; the gpt-oss tokenizer adds no BOS or EOS either way.
    add_special_tokens: bool = True
    return_token_strs: bool | None = False


class TokenizeChatRequest(OpenAIRequest):
    model: str | None = None
    messages: list[ChatMessageIn] = Field(min_length=1)
    # False leaves out the `<|start|>assistant` that opens the model's turn.
    add_generation_prompt: bool = True
    # Not supported by the harmony renderer: true is a 400 (the fields exist so the error can name them).
    continue_final_message: bool = False
    chat_template: str | None = None
    add_special_tokens: bool = False
    return_token_strs: bool | None = False
    # What /v1/chat/completions renders with, so that a count here is the prompt_tokens of that request.
    reasoning_effort: ReasoningEffort | None = None
    tools: list[ToolDefinition] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None

    @model_validator(mode="before")
    @classmethod
    def _prompt_or_messages(cls, data: Any) -> Any:
        if isinstance(data, dict) and "prompt" in data:
            raise PydanticCustomError("prompt_and_messages", "give either prompt or messages, not both")
        return data

    @field_validator("messages", "tools", mode="before")
    @classmethod
    def _bounded_count(cls, value: Any, info: ValidationInfo) -> Any:
        return check_item_count(value, request_limits().max_input_items, info.field_name, "server.max_input_items")


def _tokenize_kind(body: Any) -> str:
    # A body with `messages` is a chat; anything else is validated as a prompt (and told what it lacks).
    return "tokenize-chat" if isinstance(body, dict) and "messages" in body else "tokenize-prompt"


# The tags are not field names (they hold a "-"), so an error's path names the field itself: `messages[0].role`.
TokenizeRequest = Annotated[
    Annotated[TokenizeCompletionRequest, Tag("tokenize-prompt")] | Annotated[TokenizeChatRequest, Tag("tokenize-chat")],
    Discriminator(_tokenize_kind),
]


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int
    tokens: list[int]
    # The vocabulary's own spelling of each token (bytes as printable characters, a leading space as "Ġ"),
    # as Hugging Face tokenizers and vLLM write them; null unless return_token_strs.
    token_strs: list[str] | None = None


class DetokenizeRequest(OpenAIRequest):
    model: str | None = None
    tokens: list[StrictInt]

    @field_validator("tokens", mode="before")
    @classmethod
    def _bounded_count(cls, value: Any) -> Any:
        # A detokenized prompt is bounded as a tokenized one is.
        return check_item_count(value, request_limits().max_prompt_tokens, "tokens", "server.max_prompt_tokens")


class DetokenizeResponse(BaseModel):
    prompt: str


class TokenizerInfoResponse(BaseModel):
    """The tokenizer's configuration, named as a Hugging Face tokenizer_config.json names it (what vLLM answers).

    Clients such as lm-eval read `eos_token` (and `bos_token`) and then tokenize those strings with /tokenize."""

    model_config = ConfigDict(extra="allow")

    tokenizer_class: str
    model_max_length: int
    vocab_size: int
    bos_token: str
    eos_token: str
    pad_token: str
    add_bos_token: bool = False
    add_eos_token: bool = False
    clean_up_tokenization_spaces: bool = False
