"""After loading, the objects alive are frozen out of the collector's walks (engine/gc_pauses.py)."""

from __future__ import annotations

import gc

from tkr_embed.engine import gc_pauses


def test_loaded_objects_are_frozen_and_new_ones_are_not(monkeypatch):
    loaded = [object() for _ in range(1000)]
    try:
        frozen = gc_pauses.freeze_loaded_objects()
        # frozen objects that die (other tests' threads may still drop some) leave the count: it can only fall
        assert frozen >= len(loaded) and gc.get_freeze_count() <= frozen
        tracked = [[] for _ in range(10)]  # objects made after the freeze are collected as usual
        assert all(gc.is_tracked(t) for t in tracked) and gc.get_freeze_count() <= frozen
        monkeypatch.setattr(gc_pauses, "FREEZE_AFTER_LOAD", False)
        assert gc_pauses.freeze_loaded_objects() == 0 and gc.get_freeze_count() <= frozen
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0
