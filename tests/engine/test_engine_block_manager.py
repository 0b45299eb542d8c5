"""Block pool: allocation, prefix caching by chained hashes, LRU eviction, fork."""

from __future__ import annotations

from tkr_embed.engine.block_manager import BlockManager
from tkr_embed.engine.outputs import RequestTimings
from tkr_embed.engine.sampling_params import SamplingParams
from tkr_embed.engine.sequence import Request, Sequence


def make_seq(token_ids: list[int], seq_id: int = 0) -> Sequence:
    request = Request(f"r{seq_id}", list(token_ids), SamplingParams(), RequestTimings(0.0))
    seq = Sequence(seq_id, 0, request, request.params, list(token_ids), len(token_ids))
    request.seqs.append(seq)
    return seq


def compute_all(manager: BlockManager, seq: Sequence) -> None:
    """What the scheduler does for a fully prefilled prompt."""
    manager.append_slots(seq, seq.num_tokens - seq.num_computed_tokens)
    seq.num_computed_tokens = seq.num_tokens
    manager.commit(seq)


def test_allocation_and_free_return_every_block() -> None:
    manager = BlockManager(num_blocks=8, block_size=4)
    seq = make_seq(list(range(10)))
    assert manager.allocate(seq) == 0
    compute_all(manager, seq)
    assert len(seq.block_table) == 3 and manager.num_free_blocks == 5
    manager.free(seq)
    assert manager.num_free_blocks == 8 and manager.num_used_blocks == 0


def test_prefix_hit_covers_full_blocks_and_leaves_one_token() -> None:
    manager = BlockManager(num_blocks=16, block_size=4)
    first = make_seq(list(range(12)), 0)
    manager.allocate(first)
    compute_all(manager, first)
    # Same 12 tokens: only 2 full blocks may be reused, the last token must be computed.
    same = make_seq(list(range(12)), 1)
    assert manager.allocate(same) == 8
    assert same.block_table == first.block_table[:2]
    # A prompt diverging inside the third block reuses the first two only.
    diverging = make_seq(list(range(9)) + [99, 98, 97, 96], 2)
    assert manager.allocate(diverging) == 8
    # A different first block breaks the chain even if later blocks match.
    other_start = make_seq([50] + list(range(1, 12)) + [1], 3)
    assert manager.allocate(other_start) == 0


def test_cached_blocks_survive_free_until_evicted_lru() -> None:
    manager = BlockManager(num_blocks=4, block_size=2)
    old = make_seq([1, 2, 3, 4, 5], 0)
    manager.allocate(old)
    compute_all(manager, old)
    manager.free(old)
    assert manager.num_free_blocks == 4  # cached blocks count as free
    again = make_seq([1, 2, 3, 4, 9], 1)
    assert manager.allocate(again) == 4  # still cached after free
    manager.free(again)
    # Fill the pool with unrelated tokens: cached blocks get evicted, least recently freed first.
    filler = make_seq([7, 7, 7, 7, 7, 7, 7, 7], 2)
    manager.allocate(filler)
    manager.append_slots(filler, 8)
    assert manager.num_free_blocks == 0
    manager.free(filler)
    assert manager.allocate(make_seq([1, 2, 3, 4, 9], 3)) == 0


def test_fork_shares_full_prompt_blocks_with_reference_counts() -> None:
    manager = BlockManager(num_blocks=8, block_size=4, enable_prefix_caching=False)
    parent = make_seq(list(range(10)), 0)
    manager.allocate(parent)
    compute_all(manager, parent)
    child = make_seq(list(range(10)), 1)
    assert manager.fork(parent, child) == 8
    assert child.block_table == parent.block_table[:2]
    used_before = manager.num_used_blocks
    manager.free(parent)
    assert manager.num_used_blocks == used_before - 1  # the shared two stay with the child
    manager.free(child)
    assert manager.num_free_blocks == 8
