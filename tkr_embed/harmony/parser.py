"""Lenient streaming parser for the assistant's harmony output.

Fed one generated token at a time (after `<|start|>assistant` and any forced prefix), it splits the
stream into reasoning (analysis channel), content (final channel, preambles, plain text) and tool calls
(commentary to=functions.NAME). It never raises: a random-weight model or a model that keeps talking
after its final answer gives the best reading of what it wrote, never an error.

Header text (role, recipient, channel, content type) is never reported as reasoning, content or arguments,
whatever the tokens: once text is known to belong to a header (after <|start|>, <|channel|> or
<|constrain|>, or a ` to=` recipient) it stays header until <|message|> or the message's end, however long.
Only text that starts a message without any of these (plain text with no header) is content.
"""

from __future__ import annotations

import codecs
import enum
import secrets
from dataclasses import dataclass, field

from tkr_embed.harmony import special_tokens as special
from tkr_embed.harmony.events import ContentDelta, ParsedOutput, ParserEvent, ReasoningDelta, ToolCallDelta
from tkr_embed.harmony.header import BodyKind, HeaderInfo, is_undecided_role_text, read_header, starts_with_recipient
from tkr_embed.harmony.tokenizer import HarmonyTokenizer, get_tokenizer
from tkr_embed.harmony.types import ToolCall

__all__ = [
    "ContentDelta",
    "HarmonyStreamParser",
    "ParsedOutput",
    "ParserEvent",
    "ReasoningDelta",
    "ToolCallDelta",
]

# The header bytes kept (enough for any role, recipient and channel): a longer header is read from its start.
MAX_HEADER_BYTES = 256


class _Phase(enum.Enum):
    HEADER = "header"  # between <|start|> (or the stream's start) and <|message|>
    BODY = "body"  # between <|message|> and <|end|> / <|call|> / <|return|>
    BETWEEN = "between"  # after a message, before the next <|start|>
    DONE = "done"  # after <|return|> or a finished final answer: the rest is ignored


class _Header:
    """The header being read, as raw bytes per section: role/recipient, channel, content type."""

    def __init__(self, implicit_role: bool) -> None:
        self.implicit_role = implicit_role  # the prompt wrote `<|start|>assistant` for us
        self.role_bytes = bytearray()
        self.channel_bytes = bytearray()
        self.constrain_bytes = bytearray()
        self._current = self.role_bytes  # the section the next text belongs to

    @property
    def in_role_section(self) -> bool:
        return self._current is self.role_bytes

    @property
    def is_header(self) -> bool:
        """Whether this can only be a header: opened by <|start|>, past <|channel|> or <|constrain|>, or
        begun with a recipient. Otherwise the stream started a message with text that may be plain content."""
        return not self.implicit_role or not self.in_role_section or starts_with_recipient(_text(self.role_bytes))

    @property
    def is_plain_text(self) -> bool:
        """Text the stream started a message with that no header starts with (or too much of it)."""
        if self.is_header:
            return False
        return self.size > MAX_HEADER_BYTES or not is_undecided_role_text(_text(self.role_bytes))

    def start_channel(self) -> None:
        self._current = self.channel_bytes

    def start_constrain(self) -> None:
        self._current = self.constrain_bytes

    def append(self, data: bytes) -> None:
        if self.is_header:  # bounded: what lies past the limit is never read
            data = data[: max(0, MAX_HEADER_BYTES - self.size)]
        self._current.extend(data)

    @property
    def size(self) -> int:
        return len(self.role_bytes) + len(self.channel_bytes) + len(self.constrain_bytes)

    def info(self) -> HeaderInfo:
        return read_header(_text(self.role_bytes), _text(self.channel_bytes), self.implicit_role)

    def all_bytes(self) -> bytes:
        return bytes(self.role_bytes + self.channel_bytes + self.constrain_bytes)


@dataclass
class _Body:
    kind: BodyKind
    channel: str | None
    tool_index: int | None = None
    decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )


class HarmonyStreamParser:
    """Incremental harmony parser: `feed()` each generated token, read `result()` at any point.

    Invariant: the text of every reported delta, concatenated per kind, equals `result()`.
    Events produced by the forced prefix (e.g. the opening of a forced tool call) are reported by the
    first `feed()`.
    """

    def __init__(self, forced_prefix: list[int] | None = None, tokenizer: HarmonyTokenizer | None = None) -> None:
        self._tokenizer = tokenizer or get_tokenizer()
        self._phase = _Phase.HEADER
        self._header = _Header(implicit_role=True)
        self._body: _Body | None = None
        self._reasoning: list[str] = []
        self._content: list[str] = []
        self._tool_calls: list[ToolCall] = []
        self._pending: list[ParserEvent] = []
        for token_id in forced_prefix or []:
            self._pending.extend(self._process(token_id))

    def feed(self, token_id: int) -> list[ParserEvent]:
        """Take one generated token; return the deltas it completes (often none, never raises)."""
        events, self._pending = self._pending, []
        events.extend(self._process(int(token_id)))
        return events

    def result(self) -> ParsedOutput:
        """Reasoning, content and tool calls reported so far; after the last token, the final result."""
        calls = [ToolCall(call.id, call.name, call.arguments) for call in self._tool_calls]
        return ParsedOutput("".join(self._reasoning), "".join(self._content), calls)

    # -- one token -----------------------------------------------------------------------------

    def _process(self, token_id: int) -> list[ParserEvent]:
        if self._phase is _Phase.DONE or not 0 <= token_id < self._tokenizer.vocab_size:
            return []
        if self._tokenizer.is_special(token_id):
            return self._special(token_id)
        data = self._tokenizer.decode_bytes([token_id])
        if self._phase is _Phase.BETWEEN:
            # Text where a <|start|> belongs: read it as a new assistant message.
            self._open_header(implicit_role=True)
        if self._phase is _Phase.HEADER:
            return self._header_text(data)
        return self._body_text(data)

    def _special(self, token_id: int) -> list[ParserEvent]:
        if token_id == special.START:
            events = self._close_body(finished_final=False)
            self._open_header(implicit_role=False)
            return events
        if token_id in (special.END, special.RETURN, special.CALL):
            return self._end_message(token_id)
        if token_id in (special.CHANNEL, special.CONSTRAIN):
            # Header sections: one inside a body (or between messages) starts a new header there, so that
            # its text is never read as the body's.
            events = []
            if self._phase is not _Phase.HEADER:
                events = self._close_body(finished_final=False)
                self._open_header(implicit_role=True)
            if token_id == special.CHANNEL:
                self._header.start_channel()
            else:
                self._header.start_constrain()
            return events
        if token_id == special.MESSAGE and self._phase is _Phase.HEADER:
            return self._open_body(self._header.info())
        # Any other special token (reserved ids, <|endoftext|>, a stray <|message|>) carries no text.
        return []

    # -- header --------------------------------------------------------------------------------

    def _open_header(self, implicit_role: bool) -> None:
        self._phase = _Phase.HEADER
        self._header = _Header(implicit_role=implicit_role)
        self._body = None

    def _header_text(self, data: bytes) -> list[ParserEvent]:
        header = self._header
        header.append(data)
        if not header.is_plain_text:
            return []
        # Not a header after all: everything so far is plain answer text.
        events = self._open_body(HeaderInfo(BodyKind.CONTENT, None))
        return events + self._body_text(header.all_bytes())

    # -- body ----------------------------------------------------------------------------------

    def _open_body(self, info: HeaderInfo) -> list[ParserEvent]:
        self._phase = _Phase.BODY
        self._body = _Body(info.kind, info.channel)
        if info.kind is not BodyKind.TOOL_CALL:
            return []
        call = ToolCall(id=f"call_{secrets.token_hex(12)}", name=info.function_name or "", arguments="")
        self._body.tool_index = len(self._tool_calls)
        self._tool_calls.append(call)
        return [ToolCallDelta(self._body.tool_index, call.id, call.name, "")]

    def _body_text(self, data: bytes, final: bool = False) -> list[ParserEvent]:
        body = self._body
        if body is None:
            return []
        text = body.decoder.decode(data, final=final)
        if not text:
            return []
        if body.kind is BodyKind.REASONING:
            self._reasoning.append(text)
            return [ReasoningDelta(text)]
        if body.kind is BodyKind.CONTENT:
            self._content.append(text)
            return [ContentDelta(text)]
        if body.kind is BodyKind.TOOL_CALL and body.tool_index is not None:
            self._tool_calls[body.tool_index].arguments += text
            return [ToolCallDelta(body.tool_index, None, None, text)]
        return []

    def _close_body(self, finished_final: bool) -> list[ParserEvent]:
        """Flush the open body's held-back bytes; a finished final answer ends the stream."""
        if self._phase is not _Phase.BODY or self._body is None:
            return []
        events = self._body_text(b"", final=True)
        is_final_answer = self._body.kind is BodyKind.CONTENT and self._body.channel == "final"
        self._body = None
        self._phase = _Phase.DONE if finished_final and is_final_answer else _Phase.BETWEEN
        return events

    def _end_message(self, token_id: int) -> list[ParserEvent]:
        if self._phase is _Phase.HEADER and not self._header.is_header:
            # A stop right after plain text that was still being read as a possible header start ("t", "to").
            events = self._open_body(HeaderInfo(BodyKind.CONTENT, None))
            events += self._body_text(self._header.all_bytes())
        else:
            events = []
        events += self._close_body(finished_final=True)
        if token_id == special.RETURN:
            self._phase = _Phase.DONE
        elif self._phase is not _Phase.DONE:
            self._phase = _Phase.BETWEEN
        return events


def _text(data: bytes | bytearray) -> str:
    return bytes(data).decode("utf-8", errors="replace")
