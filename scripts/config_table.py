"""The README's configuration table, from the settings code itself: what each setting is with no YAML file, with
config.dev.yaml and with config.yaml. tests/docs/test_readme_config.py fails when the README's copy differs.

Usage: python scripts/config_table.py   (prints the table; paste it between the README's markers)
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from tkr_embed.config import Settings, load_settings
from tkr_embed.config_sources import FLAT_ENV_NAMES

ROOT = Path(__file__).resolve().parent.parent
BEGIN = "<!-- config-table: begin (scripts/config_table.py) -->"
END = "<!-- config-table: end -->"
# A master key that passes production's checks, so config.yaml's other values can be shown.
PRODUCTION_KEY = "k" * 32

MEANINGS = {
    "server.host": "",
    "server.port": "",
    "server.debug": "",
    "server.log_level": "debug, info, warning, error",
    "model.path": "folder of a Hugging Face gpt-oss checkpoint",
    "model.name": "the model id clients see",
    "model.quantization": "`auto`, `q4`, `q8`, `none`, `mxfp4`",
    "model.device": "`auto`, `cpu`, `cuda`, `gpu`, `mlx`",
    "security.api_key": "the master key (all permissions)",
    "security.require_https": "plain-HTTP requests get 403 `https_required` (`/health` stays open); behind a TLS "
    "proxy, `X-Forwarded-Proto` counts only from `security.trusted_proxies`",
    "security.secret_key": "keys the stored API-key hashes",
    "security.auth_enabled": "requests need a key",
    "cache.enabled": "the response cache",
    "cache.max_size": "entries",
    "cache.ttl_seconds": "",
    "rate_limit.enabled": "",
    "rate_limit.requests_per_minute": "per key",
    "storage.data_dir": "demo checkpoint, SQLite database, server secret",
    "storage.database_url": "e.g. `postgresql+asyncpg://...` for several replicas",
    "storage.redis_url": "shares rate-limit counters between replicas",
}
# Keys with no short variable that change what `make serve` does between the files.
MORE_KEYS = (
    "server.log_format",
    "engine.max_num_seqs",
    "engine.max_num_batched_tokens",
    "engine.max_waiting",
    "engine.cpu_threads",
    "storage.responses_retention_days",
)
MORE_MEANINGS = {
    "server.log_format": "`json` or `text`",
    "engine.max_num_seqs": "sequences decoded together",
    "engine.max_num_batched_tokens": "tokens an engine step computes while streams decode",
    "engine.max_waiting": "queued requests; beyond, 503 with `Retry-After`",
    "engine.cpu_threads": "torch's threads on the CPU",
    "storage.responses_retention_days": "days a stored `/v1/responses` answer is kept before the purge",
}


def _effective(settings: Settings, key: str) -> str:
    """What the server does with the key's value, where None or the value alone does not say it."""
    section, field = key.split(".")
    value = getattr(getattr(settings, section), field)
    special: dict[str, Callable[[], str]] = {
        "security.auth_enabled": lambda: "on" if settings.auth_required else "off",
        "server.log_level": lambda: settings.log_level,
        "security.api_key": lambda: "required" if settings.auth_required and settings.env == "production" else "unset",
        "security.secret_key": lambda: "generated once into the data folder",
        "model.path": lambda: "unset: the demo checkpoint" if value is None else f"`{value}`",
        "model.name": lambda: "the folder's name" if value is None else f"`{value}`",
        "storage.database_url": lambda: "SQLite in the data folder" if value is None else f"`{value}`",
        "storage.redis_url": lambda: "unset: in memory" if value is None else f"`{value}`",
        "engine.cpu_threads": lambda: "all usable cores but one" if value is None else f"`{value}`",
        "engine.max_num_seqs": lambda: "256 on CUDA, else 64" if value is None else f"`{value}`",
        "storage.responses_retention_days": lambda: "unset: until deleted" if value is None else f"`{value}`",
    }
    if key in special:
        return special[key]()
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def sources() -> list[tuple[str, Settings]]:
    with tempfile.TemporaryDirectory() as empty:
        bare = load_settings(environ={}, search_dir=empty)
    development = load_settings(ROOT / "config.dev.yaml", environ={})
    production = load_settings(ROOT / "config.yaml", environ={"GENERATION_API_KEY": PRODUCTION_KEY})
    return [("no YAML file", bare), ("config.dev.yaml", development), ("config.yaml", production)]


def render() -> str:
    columns = sources()
    header = "| variable | key | " + " | ".join(name for name, _ in columns) + " |"
    lines = [BEGIN, header, "|" + "---|" * (2 + len(columns))]
    variables = {f"{section}.{field}": f"`GENERATION_{name}`" for name, (section, field) in FLAT_ENV_NAMES.items()}
    keys = list(variables) + list(MORE_KEYS)
    for key in keys:
        variable = variables.get(key, f"`GENERATION_{key.replace('.', '__').upper()}`")
        meaning = MEANINGS.get(key) or MORE_MEANINGS.get(key, "")
        described = f"`{key}`" + (f": {meaning}" if meaning else "")
        values = " | ".join(_effective(settings, key) for _, settings in columns)
        lines.append(f"| {variable} | {described} | {values} |")
    lines.append(END)
    return "\n".join(lines)


def main() -> int:
    print(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
