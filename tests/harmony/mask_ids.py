"""The ids a constraint state allows next, read through the engine's own mask resolution."""

from __future__ import annotations

import numpy as np

from tkr_embed.engine.constraints import PendingMask, resolve_masks
from tkr_embed.harmony.special_tokens import VOCAB_SIZE


def allowed_ids(state) -> list[int]:
    """Sorted ids the state allows for its next token (every id when it is free)."""
    words = resolve_masks([PendingMask(state)], VOCAB_SIZE)
    if words is None:
        return list(range(VOCAB_SIZE))
    return np.nonzero(np.unpackbits(words[0].view(np.uint8), bitorder="little"))[0].tolist()
