"""API key material: generation, keyed hashing (HMAC-SHA256 with the server secret), the secret itself."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

KEY_PREFIX = "tkr_"
KEY_RANDOM_BYTES = 32  # 256 bits
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# 62**43 > 2**256, so 43 base-62 digits hold any 32-byte value.
KEY_BODY_LENGTH = 43
KEY_LENGTH = len(KEY_PREFIX) + KEY_BODY_LENGTH
DISPLAY_PREFIX_LENGTH = 8  # "tkr_" and four characters of the body

SECRET_ENV = "GENERATION_SECRET_KEY"
SECRET_FILE_NAME = "secret.key"
MIN_SECRET_BYTES = 32


def _base62(value: int, width: int) -> str:
    digits = []
    for _ in range(width):
        value, digit = divmod(value, 62)
        digits.append(_BASE62[digit])
    return "".join(reversed(digits))


def generate_api_key() -> str:
    """A new key: `tkr_` then 43 base-62 characters carrying 256 random bits (safe in URLs and shells)."""
    return KEY_PREFIX + _base62(int.from_bytes(secrets.token_bytes(KEY_RANDOM_BYTES), "big"), KEY_BODY_LENGTH)


def looks_like_api_key(raw_key: str) -> bool:
    """Cheap shape check (prefix, length, alphabet); says nothing about validity."""
    return (
        len(raw_key) == KEY_LENGTH
        and raw_key.startswith(KEY_PREFIX)
        and all(char in _BASE62 for char in raw_key[len(KEY_PREFIX) :])
    )


def display_parts(raw_key: str) -> tuple[str, str]:
    """What may be stored and shown next to a key: its first eight and its last four characters."""
    return raw_key[:DISPLAY_PREFIX_LENGTH], raw_key[-4:]


class KeyHasher:
    """HMAC-SHA256 of keys under the server secret; a stolen database alone cannot test guesses."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the server secret must hold at least {MIN_SECRET_BYTES} bytes")
        self._secret = secret

    def digest(self, raw_key: str) -> str:
        """Hex digest stored in (and looked up from) the database."""
        return hmac.new(self._secret, raw_key.encode("utf-8"), hashlib.sha256).hexdigest()

    def matches(self, raw_key: str, stored_digest: str) -> bool:
        """Constant-time check of a presented key against a stored digest."""
        return hmac.compare_digest(self.digest(raw_key).encode("ascii"), stored_digest.encode("ascii"))


def constant_time_equals(presented: str, expected: str) -> bool:
    """Compare two secrets without leaking where they first differ."""
    return hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))


def load_server_secret(data_dir: str | Path, configured: str | None = None) -> bytes:
    """The HMAC secret: `configured`, else GENERATION_SECRET_KEY, else `<data_dir>/secret.key`.

    The file is created once (random 256 bits, hex, mode 0600) and reused afterwards, so keys keep
    working across restarts. Creation is exclusive: two processes starting together agree on one secret.
    """
    value = configured or os.environ.get(SECRET_ENV)
    if value:
        secret = value.encode("utf-8")
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"{SECRET_ENV} must be at least {MIN_SECRET_BYTES} characters long")
        return secret
    folder = Path(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / SECRET_FILE_NAME
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_secret_file(path)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(secrets.token_hex(32))
    return _read_secret_file(path)


def _read_secret_file(path: Path) -> bytes:
    secret = path.read_text().strip().encode("utf-8")
    if len(secret) < MIN_SECRET_BYTES:
        # A concurrent creator may not have written yet; one short retry covers that window.
        time.sleep(0.05)
        secret = path.read_text().strip().encode("utf-8")
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"{path} holds no usable secret (at least {MIN_SECRET_BYTES} characters)")
    return secret
