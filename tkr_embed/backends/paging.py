"""Paged-KV addressing every backend shares (no framework imports): where a sequence's new tokens go."""

from __future__ import annotations


class AttentionInputError(ValueError):
    """A block table does not cover the positions it is asked to hold."""


def new_token_slots(start_pos: int, num_new: int, block_table: list[int], block_size: int) -> list[int]:
    """Cache slots of positions start_pos .. start_pos + num_new - 1: block_table[p // B] * B + p % B."""
    if num_new < 1:
        raise AttentionInputError("every sequence needs at least one new token")
    end = start_pos + num_new
    if len(block_table) * block_size < end:
        raise AttentionInputError(
            f"block table of {len(block_table)} blocks cannot hold {end} positions (block size {block_size})"
        )
    return [block_table[p // block_size] * block_size + p % block_size for p in range(start_pos, end)]
