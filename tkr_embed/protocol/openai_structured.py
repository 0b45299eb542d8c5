"""Wire types of structured outputs, shared by Chat Completions (`response_format`) and Responses
(`text.format`, flattened there)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Discriminator, Field, Tag

from tkr_embed.protocol.openai_common import OpenAIRequest

FORMAT_NAME_PATTERN = r"^[A-Za-z0-9_\-]{1,64}$"


class JsonSchemaFormat(OpenAIRequest):
    """A JSON schema the answer must follow. `strict` is accepted either way: the answer always follows the
    schema, and a schema feature that cannot be enforced is refused whatever `strict` says."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    name: str = Field(pattern=FORMAT_NAME_PATTERN)
    description: str | None = None
    json_schema: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None


class TextFormatJsonSchema(JsonSchemaFormat):
    """Responses' `text.format` of a JSON schema: the same fields, beside `type`."""

    type: Literal["json_schema"]

    @property
    def spec(self) -> JsonSchemaFormat:
        return self


class ResponseFormatText(OpenAIRequest):
    type: Literal["text"]


class ResponseFormatJsonObject(OpenAIRequest):
    type: Literal["json_object"]


class ResponseFormatJsonSchema(OpenAIRequest):
    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat

    @property
    def spec(self) -> JsonSchemaFormat:
        return self.json_schema


def _format_tag(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return f"format-{kind}" if kind in ("text", "json_object", "json_schema") else None


# The tags carry a "-" so error paths name the fields (response_format.json_schema.name), not the branch.
_DISCRIMINATOR = Discriminator(
    _format_tag,
    custom_error_type="format_type",
    custom_error_message="type must be text, json_object or json_schema",
)
ResponseFormat = Annotated[
    Annotated[ResponseFormatText, Tag("format-text")]
    | Annotated[ResponseFormatJsonObject, Tag("format-json_object")]
    | Annotated[ResponseFormatJsonSchema, Tag("format-json_schema")],
    _DISCRIMINATOR,
]

TextFormat = Annotated[
    Annotated[ResponseFormatText, Tag("format-text")]
    | Annotated[ResponseFormatJsonObject, Tag("format-json_object")]
    | Annotated[TextFormatJsonSchema, Tag("format-json_schema")],
    _DISCRIMINATOR,
]
