"""POST /tokenize, POST /detokenize, GET /tokenizer_info: the token ids the engine would be given, without running it.

A text prompt is encoded as /v1/completions encodes it (special-token text such as "<|end|>" stays ordinary
text), and chat messages are rendered as /v1/chat/completions renders them, so a count here is the
`prompt_tokens` of the same generation request. Tokenizing and rendering run on the prompt pool
(`ModelContext.off_loop`), bounded by the same admission limits as generation.
"""

from __future__ import annotations

import functools

from tkr_embed.engine.tokenizer import Tokenizer
from tkr_embed.harmony.special_tokens import ENDOFTEXT, RETURN, START, STARTOFTEXT
from tkr_embed.protocol.tokenize import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeChatRequest,
    TokenizeCompletionRequest,
    TokenizeResponse,
    TokenizerInfoResponse,
)
from tkr_embed.services.admission import chat_chars, check_prompt_chars, check_prompt_tokens
from tkr_embed.services.chat_prompt import harmony_messages, harmony_tool_choice, harmony_tools, render
from tkr_embed.services.context import ModelContext
from tkr_embed.services.errors import BadRequestError


@functools.cache
def _byte_alphabet() -> tuple[str, ...]:
    """The character byte-level BPE vocabularies write for each byte: printable Latin-1 bytes as themselves,
    the others (controls, space, soft hyphen) as the code points from 256 up, in byte order."""
    printable = {*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)}
    shifted = 0
    alphabet = []
    for byte in range(256):
        if byte in printable:
            alphabet.append(chr(byte))
        else:
            alphabet.append(chr(256 + shifted))
            shifted += 1
    return tuple(alphabet)


def token_strings(tokenizer: Tokenizer, token_ids: list[int]) -> list[str]:
    """Each token as the vocabulary spells it (" world" is "Ġworld"): lossless, unlike decoding one token at a time,
    which turns a piece of a multi-byte character into U+FFFD."""
    alphabet = _byte_alphabet()
    return ["".join(alphabet[byte] for byte in tokenizer.decode_bytes([token_id])) for token_id in token_ids]


class TokenizationService:
    def __init__(self, ctx: ModelContext) -> None:
        self.ctx = ctx

    async def tokenize(self, request: TokenizeCompletionRequest | TokenizeChatRequest) -> TokenizeResponse:
        return await self.ctx.off_loop(self.prepare_tokens, request)

    async def detokenize(self, request: DetokenizeRequest) -> DetokenizeResponse:
        return await self.ctx.off_loop(self.prepare_text, request)

    def prepare_tokens(self, request: TokenizeCompletionRequest | TokenizeChatRequest) -> TokenizeResponse:
        """Encodes or renders (seconds for megabytes of text): call it through `ctx.off_loop`."""
        self.ctx.check_model(request.model)
        if isinstance(request, TokenizeChatRequest):
            token_ids, param = self._render(request), "messages"
        else:
            check_prompt_chars(len(request.prompt), "prompt")
            token_ids, param = self.ctx.tokenizer.encode(request.prompt), "prompt"
        check_prompt_tokens(len(token_ids), param)
        return TokenizeResponse(
            count=len(token_ids),
            max_model_len=self.ctx.context_length,
            tokens=token_ids,
            token_strs=token_strings(self.ctx.tokenizer, token_ids) if request.return_token_strs else None,
        )

    def prepare_text(self, request: DetokenizeRequest) -> DetokenizeResponse:
        """Decodes (a long list takes a while): call it through `ctx.off_loop`."""
        self.ctx.check_model(request.model)
        vocab_size = self.ctx.tokenizer.vocab_size
        for index, token_id in enumerate(request.tokens):
            if not 0 <= token_id < vocab_size:
                raise BadRequestError(
                    f"tokens[{index}] is {token_id}, outside the vocabulary [0, {vocab_size})", f"tokens[{index}]"
                )
        return DetokenizeResponse(prompt=self.ctx.tokenizer.decode(request.tokens))

    def info(self) -> TokenizerInfoResponse:
        tokenizer = self.ctx.tokenizer
        return TokenizerInfoResponse(
            tokenizer_class=type(tokenizer).__name__,
            model_max_length=self.ctx.context_length,
            vocab_size=tokenizer.vocab_size,
            bos_token=tokenizer.decode([STARTOFTEXT]),
            eos_token=tokenizer.decode([RETURN]),
            pad_token=tokenizer.decode([ENDOFTEXT]),
        )

    def _render(self, request: TokenizeChatRequest) -> list[int]:
        if request.continue_final_message:
            raise BadRequestError(
                "continue_final_message is not supported: a harmony prompt ends every message it renders",
                "continue_final_message",
            )
        if request.chat_template is not None:
            raise BadRequestError(
                "chat_template is not supported: gpt-oss prompts are rendered in the harmony format",
                "chat_template",
            )
        messages = harmony_messages(request.messages)
        check_prompt_chars(chat_chars(messages), "messages")
        tools = harmony_tools(request.tools)
        rendered = render(
            messages,
            reasoning_effort=request.reasoning_effort or self.ctx.default_reasoning_effort,
            tools=tools,
            tool_choice=harmony_tool_choice(request.tool_choice, tools),
        )
        if request.add_generation_prompt:
            return rendered.token_ids
        # The generation prompt is `<|start|>assistant` and any prefix a tool_choice forces after it.
        turn = [START, *self.ctx.tokenizer.encode("assistant")]
        conversation = rendered.token_ids[: len(rendered.token_ids) - len(rendered.forced_prefix)]
        assert conversation[-len(turn) :] == turn, "a rendered chat ends with the assistant's turn"
        return conversation[: -len(turn)]
