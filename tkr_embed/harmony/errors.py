"""Typed errors of the harmony layer (vocabulary loading, prompt rendering)."""

from __future__ import annotations


class VocabError(RuntimeError):
    """The offline vocabulary is missing or is not the file we expect (names the file)."""


class HarmonyRenderError(ValueError):
    """A chat request cannot be rendered as a harmony prompt.

    `param` names the offending field as the client spelled it (e.g. "messages[2].role"), for the
    OpenAI error shape.
    """

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
