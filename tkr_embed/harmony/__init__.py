"""Harmony: offline vocabulary, tokenizer, prompt rendering and the lenient streaming parser.

Import from the submodules (`tkr_embed.harmony.render`, `.parser`, `.tokenizer`, `.types`, `.vocab`);
this package module stays empty so importing one part never loads the others.
"""
