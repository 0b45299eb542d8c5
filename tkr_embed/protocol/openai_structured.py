"""Wire types of structured outputs, shared by Chat Completions (`response_format`) and Responses
(`text.format`, flattened there)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field

from tkr_embed.protocol.openai_common import OpenAIRequest

FORMAT_NAME_PATTERN = r"^[A-Za-z0-9_\-]{1,64}$"


class JsonSchemaFormat(OpenAIRequest):
    """A JSON schema the answer must follow. `strict` is accepted either way: the answer always follows the
    schema, and a schema feature that cannot be enforced is refused whatever `strict` says."""

    model_config = ConfigDict(populate_by_name=True)

    name: str = Field(pattern=FORMAT_NAME_PATTERN)
    description: str | None = None
    json_schema: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None


class ResponseFormatText(OpenAIRequest):
    type: Literal["text"]


class ResponseFormatJsonObject(OpenAIRequest):
    type: Literal["json_object"]


class ResponseFormatJsonSchema(OpenAIRequest):
    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


ResponseFormat = Annotated[
    ResponseFormatText | ResponseFormatJsonObject | ResponseFormatJsonSchema, Field(discriminator="type")
]
