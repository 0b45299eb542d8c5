"""Paged KV block pool: free list, reference counts and prefix caching by chained block hashes."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from tkr_embed.engine.sequence import Sequence


@dataclass
class Block:
    block_id: int
    ref_count: int = 0
    content_hash: int | None = None  # set once the block is full, computed and cached
    token_ids: tuple[int, ...] = ()  # its tokens, to rule out hash collisions


@dataclass(frozen=True)
class PrefixMatch:
    """The leading full blocks of a token sequence already in the cache."""

    block_ids: list[int] = field(default_factory=list)
    block_hashes: list[int] = field(default_factory=list)

    @property
    def num_cached_blocks(self) -> int:
        return len(self.block_ids)


def chain_hash(prev_hash: int | None, token_ids: tuple[int, ...]) -> int:
    """The hash of a full block: it covers every token before it through `prev_hash`."""
    return hash((prev_hash, token_ids))


class BlockManager:
    """Owns which KV blocks each sequence uses.

    Invariants: every block is in exactly one of: used (ref_count > 0), the free list (ref_count 0,
    no hash) or the evictable LRU (ref_count 0, hashed, still reusable by a prefix match);
    `num_free_blocks + num_used_blocks == num_blocks`. A block is hashed only after its KV is computed.
    """

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self._blocks = [Block(i) for i in range(num_blocks)]
        self._free: list[int] = list(range(num_blocks - 1, -1, -1))  # pop() hands out low ids first
        self._evictable: OrderedDict[int, None] = OrderedDict()  # oldest first
        self._hash_to_block: dict[int, int] = {}

    @property
    def num_free_blocks(self) -> int:
        return len(self._free) + len(self._evictable)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - self.num_free_blocks

    # --- prefix cache -------------------------------------------------------------------------

    def match_prefix(self, token_ids: list[int]) -> PrefixMatch:
        """Cached full blocks at the start of `token_ids`, leaving at least one token to compute."""
        if not self.enable_prefix_caching:
            return PrefixMatch()
        block_ids: list[int] = []
        hashes: list[int] = []
        prev_hash: int | None = None
        for start in range(0, (len(token_ids) - 1) // self.block_size * self.block_size, self.block_size):
            chunk = tuple(token_ids[start : start + self.block_size])
            block_hash = chain_hash(prev_hash, chunk)
            block_id = self._hash_to_block.get(block_hash)
            if block_id is None or self._blocks[block_id].token_ids != chunk:
                break
            block_ids.append(block_id)
            hashes.append(block_hash)
            prev_hash = block_hash
        return PrefixMatch(block_ids, hashes)

    # --- allocation ---------------------------------------------------------------------------

    def allocate(self, seq: Sequence, reuse_prefix: bool = True) -> int:
        """Give a sequence without blocks its cached prefix; return the number of cached tokens.

        reuse_prefix=False: start with no block, so every position is computed (a sequence that must see its
        prompt's logits); the blocks it fills are still published for others."""
        assert not seq.block_table, "allocate() is for sequences holding no blocks"
        match = self.match_prefix(seq.all_token_ids) if reuse_prefix else PrefixMatch()
        for block_id in match.block_ids:
            self._take(block_id)
        seq.block_table = list(match.block_ids)
        seq.block_hashes = list(match.block_hashes)
        seq.num_computed_tokens = match.num_cached_blocks * self.block_size
        return seq.num_computed_tokens

    def fork(self, parent: Sequence, child: Sequence) -> int:
        """Share the parent's full prompt blocks with a new sibling; return the shared token count.

        The child recomputes at least its last prompt token, so it samples its own first token.
        """
        assert not child.block_table, "fork() is for sequences holding no blocks"
        num_shared = min((child.num_tokens - 1) // self.block_size, parent.num_computed_tokens // self.block_size)
        child.block_table = parent.block_table[:num_shared]
        child.block_hashes = parent.block_hashes[:num_shared]
        for block_id in child.block_table:
            self._blocks[block_id].ref_count += 1
        child.num_computed_tokens = num_shared * self.block_size
        return child.num_computed_tokens

    def num_blocks_needed(self, seq: Sequence, num_new_tokens: int) -> int:
        total_tokens = seq.num_computed_tokens + num_new_tokens
        return max(0, -(-total_tokens // self.block_size) - len(seq.block_table))

    def can_append(self, seq: Sequence, num_new_tokens: int) -> bool:
        return self.num_blocks_needed(seq, num_new_tokens) <= self.num_free_blocks

    def append_slots(self, seq: Sequence, num_new_tokens: int) -> None:
        """Grow the block table to hold `num_new_tokens` more tokens (check `can_append` first)."""
        for _ in range(self.num_blocks_needed(seq, num_new_tokens)):
            seq.block_table.append(self._take_fresh())

    def commit(self, seq: Sequence) -> None:
        """Record the hashes of blocks that became full and computed, so later requests reuse them."""
        if not self.enable_prefix_caching:
            return
        num_full = seq.num_computed_tokens // self.block_size
        for index in range(len(seq.block_hashes), num_full):
            start = index * self.block_size
            chunk = tuple(seq.all_token_ids[start : start + self.block_size])
            prev_hash = seq.block_hashes[-1] if seq.block_hashes else None
            block_hash = chain_hash(prev_hash, chunk)
            seq.block_hashes.append(block_hash)
            block = self._blocks[seq.block_table[index]]
            if block_hash not in self._hash_to_block and block.content_hash is None:
                self._hash_to_block[block_hash] = block.block_id
                block.content_hash = block_hash
                block.token_ids = chunk

    def free(self, seq: Sequence) -> None:
        """Drop a sequence's references; cached blocks stay reusable until evicted."""
        for block_id in reversed(seq.block_table):
            block = self._blocks[block_id]
            block.ref_count -= 1
            assert block.ref_count >= 0, "block freed more often than taken"
            if block.ref_count == 0:
                if block.content_hash is not None:
                    self._evictable[block_id] = None
                else:
                    self._free.append(block_id)
        seq.block_table = []
        seq.block_hashes = []
        seq.num_computed_tokens = 0

    def _take(self, block_id: int) -> None:
        block = self._blocks[block_id]
        if block.ref_count == 0:
            del self._evictable[block_id]
        block.ref_count += 1

    def _take_fresh(self) -> int:
        if self._free:
            block_id = self._free.pop()
        else:
            block_id, _ = self._evictable.popitem(last=False)  # least recently freed
            block = self._blocks[block_id]
            assert block.content_hash is not None
            del self._hash_to_block[block.content_hash]
            block.content_hash, block.token_ids = None, ()
        self._blocks[block_id].ref_count = 1
        return block_id
