"""Harmony: offline vocabulary, tokenizer, prompt rendering and the lenient streaming parser."""
