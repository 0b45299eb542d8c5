"""The gateway tests import their helpers from gateway_support.py (redis_url comes from tests/conftest.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
