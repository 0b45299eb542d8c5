"""Keep Python's cyclic garbage collector out of the engine's step loop.

A loaded model leaves hundreds of thousands of long-lived Python objects (modules, parameters, kernel
caches, the tokenizer). Every full collection walks all of them, and one that falls inside a step's
kernel launches stretches that step by as long. After loading, `freeze_loaded_objects` moves what exists
into the collector's permanent generation (gc.freeze): later collections walk only newer objects.
"""

from __future__ import annotations

import gc
import logging

logger = logging.getLogger(__name__)

FREEZE_AFTER_LOAD = True  # False: leave the collector as it is (for A/B runs: bench/with_patch.py)


def freeze_loaded_objects() -> int:
    """Collect once, then freeze every object alive now; returns how many were frozen (0 when switched off)."""
    if not FREEZE_AFTER_LOAD:
        return 0
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    logger.info("%d objects alive after loading moved out of the garbage collector's reach (gc.freeze)", frozen)
    return frozen
