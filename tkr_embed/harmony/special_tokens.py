"""Ids of the harmony special tokens of the o200k_harmony encoding (checked against it by the tests)."""

from __future__ import annotations

START = 200006  # <|start|>    opens a message header (role, recipient, channel)
CHANNEL = 200005  # <|channel|>  the channel name follows
MESSAGE = 200008  # <|message|>  ends the header, the body follows
END = 200007  # <|end|>      ends a message, more may follow
RETURN = 200002  # <|return|>   ends the assistant's final answer (stop token)
CALL = 200012  # <|call|>     ends a tool call (stop token)
CONSTRAIN = 200003  # <|constrain|> the content type of a tool call follows (e.g. json)
STARTOFTEXT = 199998  # <|startoftext|> the checkpoint's bos token, and the first special id
ENDOFTEXT = 199999  # <|endoftext|>   the checkpoint's pad token

STOP_TOKEN_IDS: tuple[int, ...] = (RETURN, CALL)
VOCAB_SIZE = 201088  # the model's embedding rows; ids 199998..201087 are special or reserved
