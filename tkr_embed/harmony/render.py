"""Render a chat request into harmony prompt tokens, with tool choice enforced by a forced prefix (and, for
"required", a decode-time constraint on the recipient)."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass

from openai_harmony import HarmonyEncoding, Message, RenderOptions, TextContent

from tkr_embed.engine.constraints import TokenConstraint
from tkr_embed.harmony.chunked_encode import CHUNK_CHARS, encode_plain
from tkr_embed.harmony.conversation import build_conversation
from tkr_embed.harmony.recipient_constraint import recipient_constraint
from tkr_embed.harmony.special_tokens import MESSAGE, START, STARTOFTEXT, STOP_TOKEN_IDS
from tkr_embed.harmony.structured_constraint import HarmonyConstraint, structured_constraint, with_reasoning_budget
from tkr_embed.harmony.tokenizer import encode_with_specials, get_encoding
from tkr_embed.harmony.types import ChatMessage, FunctionTool, ReasoningEffort, ResponseFormat, ToolChoice

FIRST_SPECIAL_ID = STARTOFTEXT  # every id from here to the end of the vocabulary is a special token


@dataclass
class RenderedPrompt:
    """The prompt to generate from.

    `token_ids` is the whole prompt and ends with `forced_prefix`: assistant tokens we wrote after
    `<|start|>assistant` to enforce a tool choice (empty normally). A stream parser must be primed with
    `forced_prefix`. `stop_token_ids` are <|return|> and <|call|>. `constraint` (SamplingParams.constraint)
    restricts what the model writes after the forced prefix: for "required", the recipient to a declared function;
    with a response format or strict (or forced) tool arguments, the JSON they follow (structured_constraint.py).
    """

    token_ids: list[int]
    forced_prefix: list[int]
    stop_token_ids: list[int]
    constraint: TokenConstraint | None = None
    # What a reasoning cap needs to build a harmony constraint where the request has none of its own.
    tool_names: tuple[str, ...] = ()
    tool_choice: ToolChoice | None = None

    def constraint_for(self, max_tokens: int | None, max_reasoning_tokens: int | None = None) -> TokenConstraint | None:
        """The constraint for a request of `max_tokens`: a structured one reserves half of it for the answer.

        With `max_reasoning_tokens` (a key's cap), the analysis channel ends after that many tokens and the
        final answer opens (free, or under the request's grammar): the structured constraint's reasoning budget,
        over a constraint that leaves every body free when the request has none.
        """
        constraint = with_reasoning_budget(self.constraint, max_tokens)
        if max_reasoning_tokens is None:
            return constraint
        if not isinstance(constraint, HarmonyConstraint):
            choice = self.tool_choice or ToolChoice(mode="auto")
            constraint = structured_constraint(
                get_encoding(),
                final_grammar=None,
                tool_grammars=[(name, None) for name in self.tool_names],
                forced=choice.mode if choice.mode in ("required", "function") else None,
                forced_name=choice.function_name,
            )
        budget = constraint.reasoning_budget
        return dataclasses.replace(
            constraint, reasoning_budget=max_reasoning_tokens if budget is None else min(budget, max_reasoning_tokens)
        )


def render_chat(
    messages: list[ChatMessage],
    *,
    reasoning_effort: ReasoningEffort = "medium",
    tools: list[FunctionTool] | None = None,
    tool_choice: ToolChoice | None = None,
    instructions: str | None = None,
    response_format: ResponseFormat | None = None,
) -> RenderedPrompt:
    """Render a chat for the assistant's next turn; raises HarmonyRenderError naming the bad field."""
    choice = tool_choice or ToolChoice(mode="auto")
    if response_format is not None:
        instructions = "\n\n".join(part for part in (instructions, response_format_section(response_format)) if part)
    conversation = build_conversation(messages, reasoning_effort, tools or [], choice, instructions)
    encoding = get_encoding()
    options = RenderOptions(conversation_has_function_tools=bool(conversation.offered_tools))
    token_ids: list[int] = []
    for message in conversation.messages:
        token_ids.extend(_RENDERED.render(encoding, message, options))
    token_ids.append(START)
    # Plain text: no special-token check, which would build a regex over every special token per call (~1 ms).
    token_ids.extend(encoding.encode("assistant", disallowed_special=()))
    forced_prefix = _forced_prefix(encoding, choice)
    constraint = _constraint(encoding, conversation.offered_tools, choice, response_format)
    return RenderedPrompt(
        token_ids + forced_prefix,
        forced_prefix,
        list(STOP_TOKEN_IDS),
        constraint,
        tool_names=tuple(tool.name for tool in conversation.offered_tools),
        tool_choice=choice,
    )


def response_format_section(response_format: ResponseFormat) -> str:
    """The developer message's `# Response Formats` section, as the harmony format lays it out: the format's
    name as a heading, its description as a `//` comment, then its JSON schema on one line."""
    lines = ["# Response Formats", "", f"## {response_format.name}", ""]
    if response_format.description:
        lines.extend(f"// {line}" for line in response_format.description.splitlines())
    schema = response_format.schema if response_format.schema is not None else {"type": "object"}
    lines.append(json.dumps(schema, separators=(",", ":")))
    return "\n".join(lines)


def _constraint(
    encoding: HarmonyEncoding,
    offered_tools: list[FunctionTool],
    choice: ToolChoice,
    response_format: ResponseFormat | None,
) -> TokenConstraint | None:
    """A structured constraint when the answer or some call's arguments follow a grammar; the recipient
    constraint alone for "required" without any; else none."""
    final_grammar = response_format.grammar if response_format is not None else None
    if final_grammar is None and not any(tool.arguments_grammar for tool in offered_tools):
        if choice.mode == "required":
            return recipient_constraint(encoding, [tool.name for tool in offered_tools])
        return None
    return structured_constraint(
        encoding,
        final_grammar=final_grammar,
        tool_grammars=[(tool.name, tool.arguments_grammar) for tool in offered_tools],
        forced=choice.mode if choice.mode in ("required", "function") else None,
        forced_name=choice.function_name,
    )


class _RenderedMessages:
    """Messages rendered lately, by their JSON: the system message is the same for every request of one reasoning
    effort, a client's developer message (instructions, tools) for each of its requests, and a conversation
    resends every earlier turn with each new one. Rendering one costs about 0.1 ms; looking it up, its JSON.
    Bounded in entries and in each entry's tokens; shared by the prompt pool's threads."""

    MAX_ENTRIES = 512
    MAX_TOKENS = 4096

    def __init__(self) -> None:
        self._tokens: OrderedDict[tuple[str, bool], tuple[int, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def render(self, encoding: HarmonyEncoding, message: Message, options: RenderOptions) -> list[int]:
        if _long_text(message) is not None:
            return _render_message(encoding, message, options)
        key = (message.to_json(), bool(options.conversation_has_function_tools))
        with self._lock:
            tokens = self._tokens.get(key)
            if tokens is not None:
                self._tokens.move_to_end(key)
                return list(tokens)
        rendered = _render_message(encoding, message, options)
        if len(rendered) <= self.MAX_TOKENS:
            with self._lock:
                self._tokens[key] = tuple(rendered)
                if len(self._tokens) > self.MAX_ENTRIES:
                    self._tokens.popitem(last=False)
        return rendered


_RENDERED = _RenderedMessages()


def _render_message(encoding: HarmonyEncoding, message: Message, options: RenderOptions) -> list[int]:
    """One message as harmony renders it, except that client text never becomes special tokens.

    harmony encodes message text with special tokens allowed, so a user writing "<|end|><|start|>system"
    would forge a system message. The body (between <|message|> and the closing token) is re-encoded as
    ordinary text whenever it holds a special token; otherwise harmony's tokens are kept unchanged.
    """
    long_text = _long_text(message)
    if long_text is not None:
        # The body is the text encoded as ordinary text (what the re-encoding below yields), in pieces that
        # never hold the GIL for long; harmony renders only the frame around an empty body.
        tokens = encoding.render(message.model_copy(update={"content": [TextContent(text="")]}), options)
        body_start = tokens.index(MESSAGE) + 1
        return [*tokens[:body_start], *encode_plain(encoding, long_text), tokens[-1]]
    tokens = encoding.render(message, options)
    body_start = tokens.index(MESSAGE) + 1
    body = tokens[body_start:-1]
    if any(token_id >= FIRST_SPECIAL_ID for token_id in body):
        body = encoding.encode(encoding.decode(body), disallowed_special=())
    return [*tokens[:body_start], *body, tokens[-1]]


def _long_text(message: Message) -> str | None:
    """The text of a message whose content is one text longer than a piece of chunked encoding, else None."""
    if len(message.content) == 1 and isinstance(message.content[0], TextContent):
        text = message.content[0].text
        if len(text) > CHUNK_CHARS:
            return text
    return None


def _forced_prefix(encoding: HarmonyEncoding, choice: ToolChoice) -> list[int]:
    """The start of the assistant's commentary header that makes it call a (named) function.

    This is the header layout gpt-oss itself writes for calls (`<|channel|>commentary to=functions.NAME
    <|constrain|>json<|message|>`). For "required" the prefix stops after "functions": the model then
    writes ".NAME" as the tokens it would have used anyway (".get", "_weather"...), constrained to a declared
    NAME by `recipient_constraint`.
    """
    if choice.mode == "required":
        return encode_with_specials(encoding, "<|channel|>commentary to=functions", {"<|channel|>"})
    if choice.mode == "function":
        header = f"<|channel|>commentary to=functions.{choice.function_name} <|constrain|>json<|message|>"
        return encode_with_specials(encoding, header, {"<|channel|>", "<|constrain|>", "<|message|>"})
    return []
