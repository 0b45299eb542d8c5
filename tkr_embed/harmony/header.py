"""Reading a harmony message header: who wrote it, on which channel, to whom.

Headers come in two layouts and the parser accepts both:
  `assistant to=functions.f<|channel|>commentary <|constrain|>json`   (how harmony renders history)
  `assistant<|channel|>commentary to=functions.f <|constrain|>json`   (how gpt-oss usually writes)
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

FUNCTIONS_PREFIX = "functions."
_RECIPIENT = re.compile(r"(?:^|\s)to=(\S+)")
# Text the stream may start a message with (after the prompt's `<|start|>assistant`) that is still undecided:
# nothing, or the start of " to=" (a recipient, as harmony renders history). Any other text is plain content.
_UNDECIDED_ROLE_TEXT = re.compile(r"\s*(?:t|to)?")
# ... and text that makes it a header: a recipient, whatever follows until <|message|>.
_RECIPIENT_START = re.compile(r"\s*to=")


class BodyKind(enum.Enum):
    REASONING = "reasoning"
    CONTENT = "content"
    TOOL_CALL = "tool_call"
    IGNORED = "ignored"  # a message the assistant should not write (e.g. a made-up tool result)


@dataclass
class HeaderInfo:
    kind: BodyKind
    channel: str | None
    function_name: str | None = None


def is_undecided_role_text(role_text: str) -> bool:
    """Whether text the stream started a message with may be a header or plain text: only later tokens tell."""
    return _UNDECIDED_ROLE_TEXT.fullmatch(role_text) is not None


def starts_with_recipient(role_text: str) -> bool:
    """Whether text the stream started a message with is a header's recipient (` to=functions.f`)."""
    return _RECIPIENT_START.match(role_text) is not None


def read_header(role_text: str, channel_text: str, implicit_role: bool) -> HeaderInfo:
    """Classify a complete header. `implicit_role`: the prompt already wrote `<|start|>assistant`."""
    channel_words = channel_text.split()
    channel = channel_words[0] if channel_words and not channel_words[0].startswith("to=") else None
    role_words = role_text.split()
    role = "assistant" if implicit_role else (role_words[0] if role_words else "assistant")
    if role != "assistant":
        return HeaderInfo(BodyKind.IGNORED, channel)
    match = _RECIPIENT.search(f"{role_text} {channel_text}")
    recipient = match.group(1) if match else None
    if recipient is not None and recipient.startswith(FUNCTIONS_PREFIX) and len(recipient) > len(FUNCTIONS_PREFIX):
        return HeaderInfo(BodyKind.TOOL_CALL, channel, recipient[len(FUNCTIONS_PREFIX) :])
    if recipient is not None and recipient not in ("user", "all"):
        # Addressed to a built-in tool we do not offer (browser, python): model-internal, not an answer.
        return HeaderInfo(BodyKind.REASONING, channel)
    if channel == "analysis":
        return HeaderInfo(BodyKind.REASONING, channel)
    return HeaderInfo(BodyKind.CONTENT, channel)
