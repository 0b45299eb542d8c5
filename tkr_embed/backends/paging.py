"""Paged-KV addressing every backend shares (no framework imports): where a sequence's new tokens go."""

from __future__ import annotations

import numpy as np


class AttentionInputError(ValueError):
    """A block table does not cover the positions it is asked to hold."""


def _check_slots(start_pos: int, num_new: int, block_table, block_size: int) -> int:
    if num_new < 1:
        raise AttentionInputError("every sequence needs at least one new token")
    end = start_pos + num_new
    if len(block_table) * block_size < end:
        raise AttentionInputError(
            f"block table of {len(block_table)} blocks cannot hold {end} positions (block size {block_size})"
        )
    return end


def new_token_slots(start_pos: int, num_new: int, block_table: list[int], block_size: int) -> list[int]:
    """Cache slots of positions start_pos .. start_pos + num_new - 1: block_table[p // B] * B + p % B."""
    end = _check_slots(start_pos, num_new, block_table, block_size)
    return [block_table[p // block_size] * block_size + p % block_size for p in range(start_pos, end)]


def new_token_slot_array(start_pos: int, num_new: int, block_table: list[int], block_size: int) -> np.ndarray:
    """`new_token_slots` as an int64 array, computed without a Python loop over the positions (prefill chunks)."""
    end = _check_slots(start_pos, num_new, block_table, block_size)
    positions = np.arange(start_pos, end, dtype=np.int64)
    return np.asarray(block_table, dtype=np.int64)[positions // block_size] * block_size + positions % block_size
