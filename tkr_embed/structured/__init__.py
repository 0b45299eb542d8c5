"""Structured outputs: JSON schemas compiled into grammars (llguidance), and the per-sequence grammar matcher
that turns a grammar into token masks. No harmony here: `tkr_embed/harmony/structured_constraint.py` decides
where in a harmony response a grammar applies."""
