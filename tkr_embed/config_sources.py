"""Where settings come from besides their defaults: GENERATION_* variables and the YAML files (config.py merges them).

`GENERATION_ENV=production` picks `config.yaml`, `development` picks `config.dev.yaml`; unset, `config.dev.yaml` is
used when present, then `config.yaml`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

ENV_PREFIX = "GENERATION_"
PRODUCTION_CONFIG = "config.yaml"
DEVELOPMENT_CONFIG = "config.dev.yaml"

# The flat environment names of the original spec, each mapped onto (section, field).
# Any other field can be set as GENERATION_<SECTION>__<FIELD>, e.g. GENERATION_ENGINE__MAX_NUM_SEQS.
FLAT_ENV_NAMES: dict[str, tuple[str, str]] = {
    "HOST": ("server", "host"),
    "PORT": ("server", "port"),
    "DEBUG": ("server", "debug"),
    "LOG_LEVEL": ("server", "log_level"),
    "MODEL_PATH": ("model", "path"),
    "MODEL_NAME": ("model", "name"),
    "QUANTIZATION": ("model", "quantization"),
    "DEVICE": ("model", "device"),
    "API_KEY": ("security", "api_key"),
    "REQUIRE_HTTPS": ("security", "require_https"),
    "SECRET_KEY": ("security", "secret_key"),
    "AUTH_ENABLED": ("security", "auth_enabled"),
    "CACHE_ENABLED": ("cache", "enabled"),
    "CACHE_SIZE": ("cache", "max_size"),
    "CACHE_TTL_SECONDS": ("cache", "ttl_seconds"),
    "RATE_LIMIT_ENABLED": ("rate_limit", "enabled"),
    "RATE_LIMIT_RPM": ("rate_limit", "requests_per_minute"),
    "DATA_DIR": ("storage", "data_dir"),
    "DATABASE_URL": ("storage", "database_url"),
    "REDIS_URL": ("storage", "redis_url"),
}
SPECIAL_ENV_NAMES = frozenset({"ENV"})


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the offending key."""


class EnvSource(PydanticBaseSettingsSource):
    """GENERATION_* variables, flat names (GENERATION_PORT) and nested ones (GENERATION_ENGINE__MAX_WAITING)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self._environ = environ

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        sections: dict[str, dict[str, Any]] = {}
        section_names = set(self.settings_cls.model_fields) - {"env"}
        for name, value in self._environ.items():
            if not name.startswith(ENV_PREFIX):
                continue
            key = name[len(ENV_PREFIX) :]
            if key in SPECIAL_ENV_NAMES:
                continue
            if key in FLAT_ENV_NAMES:
                section, field_name = FLAT_ENV_NAMES[key]
            elif "__" in key:
                section, _, field_name = key.lower().partition("__")
                if section not in section_names:
                    raise ConfigError(f"unknown environment variable {name}: no section {section!r}")
            else:
                raise ConfigError(f"unknown environment variable {name}")
            sections.setdefault(section, {})[field_name] = _env_value(value)
        return sections


def _env_value(raw: str) -> Any:
    # Lists (e.g. cors_origins) may be given as YAML/JSON; scalars are left for pydantic to coerce.
    if raw.startswith("["):
        return yaml.safe_load(raw)
    if raw == "":
        return None
    return raw


def pick_config_file(env_name: str | None, search_dir: Path) -> Path | None:
    """The YAML file GENERATION_ENV selects (None when no file applies)."""
    if env_name == "production":
        candidates = [PRODUCTION_CONFIG]
    elif env_name == "development":
        candidates = [DEVELOPMENT_CONFIG]
    elif env_name in (None, ""):
        candidates = [DEVELOPMENT_CONFIG, PRODUCTION_CONFIG]
    else:
        raise ConfigError(f"GENERATION_ENV must be 'production' or 'development', not {env_name!r}")
    for name in candidates:
        path = search_dir / name
        if path.is_file():
            return path
    return None


def env_of_file(path: Path | None) -> str | None:
    if path is None:
        return None
    return {PRODUCTION_CONFIG: "production", DEVELOPMENT_CONFIG: "development"}.get(path.name)


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    for section, values in data.items():
        if section in ("env",):
            continue
        if values is not None and not isinstance(values, dict):
            raise ConfigError(f"{path}: section {section!r} must be a mapping")
    return {k: (v if v is not None else {}) for k, v in data.items()}


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged
