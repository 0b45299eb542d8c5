"""Settings: defaults < YAML (config.dev.yaml or config.yaml) < GENERATION_* environment < command-line flags.

Which YAML file: an explicit path wins; else `GENERATION_ENV=production` picks `config.yaml`,
`development` picks `config.dev.yaml`; unset, `config.dev.yaml` is used when present, then
`config.yaml`. Unknown keys (in YAML or as GENERATION_* variables) and bad values are refused with
a `ConfigError` naming the key. The flags of `tkr-embed serve` (tkr_embed/serve_args.py) arrive as `overrides`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from tkr_embed.cache.response_cache import DEFAULT_MAX_BYTES
from tkr_embed.config_sources import (
    ENV_PREFIX,
    ConfigError,
    EnvSource,
    env_of_file,
    merge,
    pick_config_file,
    read_yaml,
)
from tkr_embed.engine.args import EngineArgs
from tkr_embed.protocol.limits import RequestLimits
from tkr_embed.security.ratelimit import REDIS_MAX_CONNECTIONS, REDIS_POOL_TIMEOUT_S

PLACEHOLDER_SECRETS = frozenset({"change-me", "changeme", "secret", "please-change-me"})

_ENGINE_DEFAULTS = EngineArgs(model="")
_REQUEST_LIMITS = RequestLimits()


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8008, ge=1, le=65535)
    debug: bool = False
    log_level: Literal["debug", "info", "warning", "error"] | None = None  # None: debug in development
    log_format: Literal["json", "text"] = "json"  # one JSON object a line (request id, secrets redacted)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    cors_origins: list[str] = Field(default_factory=list)
    graceful_shutdown_s: float = Field(30.0, ge=0)
    # Connections. A client must send a request's headers within header_timeout_s of connecting (or of the first
    # byte of a later request on a kept-alive connection), else it gets 408 and is closed: a slow client holds
    # no connection for long. An idle kept-alive connection is closed after keep_alive_timeout_s. Requests beyond
    # max_connections open connections (or requests in flight) get 503; None: no cap.
    header_timeout_s: float = Field(10.0, gt=0)
    keep_alive_timeout_s: float = Field(5.0, gt=0)
    max_connections: int | None = Field(1024, ge=1)
    # Admission: what one request may ask for, each violation a 400 naming the field and the limit (the defaults
    # are protocol/limits.RequestLimits'). Items: /v1/responses input items, chat messages, tools. Sequences:
    # prompts x n. Request tokens: the sum over sequences of prompt tokens + max_tokens; a request without
    # max_tokens gets an equal share of it (services/admission.py).
    max_input_items: int = Field(_REQUEST_LIMITS.max_input_items, ge=1)
    max_prompts: int = Field(_REQUEST_LIMITS.max_prompts, ge=1)
    max_sequences: int = Field(_REQUEST_LIMITS.max_sequences, ge=1)
    max_prompt_chars: int = Field(_REQUEST_LIMITS.max_prompt_chars, ge=1)
    max_prompt_tokens: int = Field(_REQUEST_LIMITS.max_prompt_tokens, ge=1)
    max_request_tokens: int = Field(_REQUEST_LIMITS.max_request_tokens, ge=1)
    # Prompts are rendered and tokenized by this many threads (None: half the CPUs, 1 to 4), off the event loop;
    # beyond prompt_queue waiting jobs a request gets 503 with Retry-After.
    prompt_workers: int | None = Field(None, ge=1)
    prompt_queue: int = Field(64, ge=0)
    # Every this many seconds while the engine works (or just worked), one log line: prompt and generation
    # tokens/s, running and waiting requests, KV cache use (api/stats_log.py). 0: never.
    log_stats_interval_s: float = Field(10.0, ge=0)


class ModelConfig(_Section):
    path: str | None = None  # None: serve the demo checkpoint in <data_dir>/demo-model
    name: str | None = None  # the id clients see; default: the folder name
    aliases: list[str] = Field(default_factory=list)  # more names a request's `model` may give; answers say `name`
    quantization: Literal["auto", "q4", "q8", "none", "mxfp4"] = "auto"
    device: Literal["auto", "cpu", "gpu", "cuda", "mlx"] = "auto"
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    default_reasoning_effort: Literal["low", "medium", "high"] = "medium"


class EngineSettings(_Section):
    """The `engine` section: EngineArgs (tkr_embed/engine/args.py) under the names of the YAML file, with its
    defaults, and how the server runs the engine's loop."""

    # sequences running at once; None: 256 on CUDA (fewer where the KV cache is small), else 64
    # (backends/device.default_max_num_seqs)
    max_num_seqs: int | None = Field(_ENGINE_DEFAULTS.max_num_seqs, ge=1)
    max_num_batched_tokens: int = Field(_ENGINE_DEFAULTS.max_num_batched_tokens, ge=16)
    # a step in which no sequence decodes (no stream waits on it) may take this many tokens; None: 4 x
    # max_num_batched_tokens on CUDA, else the same as max_num_batched_tokens (backends/device.idle_step_tokens)
    max_num_batched_tokens_idle: int | None = Field(_ENGINE_DEFAULTS.max_num_batched_tokens_idle, ge=16)
    max_waiting: int = Field(_ENGINE_DEFAULTS.max_waiting, ge=1)
    max_model_len: int | None = Field(_ENGINE_DEFAULTS.max_model_len, ge=16)
    block_size: int = Field(_ENGINE_DEFAULTS.block_size, ge=1)
    kv_cache_blocks: int | None = Field(_ENGINE_DEFAULTS.num_kv_blocks, ge=1)  # None: from kv_cache_memory_fraction
    kv_cache_memory_fraction: float = Field(_ENGINE_DEFAULTS.kv_cache_memory_fraction, gt=0, le=1)
    enable_prefix_caching: bool = _ENGINE_DEFAULTS.enable_prefix_caching
    lookahead: bool = _ENGINE_DEFAULTS.lookahead  # launch the next decode step before this one's tokens are read
    # GPU: run a step of each size class once before serving, so no request waits for a kernel compile
    warm_up: bool = _ENGINE_DEFAULTS.warm_up
    # torch's intra-op threads on the CPU; None: every usable core but one, which the HTTP side keeps
    # (tkr_embed/backends/cpu_threads.py says why)
    cpu_threads: int | None = Field(_ENGINE_DEFAULTS.cpu_threads, ge=1)
    # The engine's step loop in a child process of its own (the server's harmony tokenizer only): it then
    # shares no GIL with the HTTP layer. Off: a thread of the server process (gil_switch_interval_ms applies).
    separate_process: bool = True
    # Python's GIL switch interval, for the whole server process with separate_process off (Python's default is
    # 5 ms). The engine thread gives up the GIL at every torch op, kernel launch and device wait; while the event
    # loop streams responses, it then waits up to this long to get it back. 0.2 ms cost the 64-stream server the
    # least throughput against the offline engine among the values measured from 0.005 to 5 ms, on H100 and H200.
    gil_switch_interval_ms: float = Field(0.2, gt=0, le=100)
    # When the engine dies (its process killed, its loop crashed, a step hung past step_timeout_s), every open
    # request fails at once and /health answers 503 engine_dead. Then "exit": the server exits non-zero, for its
    # supervisor to restart it; "restart": a new engine process is started, at most max_restarts times over the
    # server's life (then it exits).
    on_failure: Literal["exit", "restart"] = "exit"
    max_restarts: int = Field(3, ge=0)
    # The watchdog: a step on the device with no progress for this long (seconds) counts as a hung engine, whose
    # process is killed (engine process only: separate_process).
    step_timeout_s: float = Field(60.0, gt=0)


class SecurityConfig(_Section):
    auth_enabled: bool | None = None  # None: on in production, off in development
    api_key: str | None = None  # the master (admin) key
    secret_key: str | None = None  # keys API keys' stored hashes
    require_https: bool = False  # plain-HTTP requests refused with 403 (/health stays reachable)
    # Peers (IPs or CIDR networks) whose X-Forwarded-Proto is believed; anyone else's is ignored.
    trusted_proxies: list[str] = Field(default_factory=lambda: ["127.0.0.1", "::1"])
    metrics_public: bool = False  # GET /metrics without a key (else: admin keys only)
    # Seconds an authenticated key is remembered in process (0: look it up every request). Revocation
    # through this process takes effect at once; through another replica or the CLI, within this time.
    key_cache_ttl_s: float = Field(5.0, ge=0)


class RateLimitConfig(_Section):
    enabled: bool = False
    burst: int = Field(10, ge=1)
    requests_per_minute: int = Field(60, ge=1)
    requests_per_hour: int = Field(1000, ge=1)
    requests_per_day: int = Field(10000, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)
    redis_url: str | None = None  # counters shared by replicas; default: storage.redis_url, else memory
    # When the counter store (Redis) fails: True admits the request unchecked (logged, counted in
    # tkr_rate_limit_store_errors_total); False refuses it with 503 and Retry-After.
    fail_open: bool = True
    # Redis connections of this process's limiter; when all are busy a check waits up to redis_pool_timeout_s for
    # one, then the request is refused with 429 (limiter_busy), never admitted unchecked.
    redis_max_connections: int = Field(REDIS_MAX_CONNECTIONS, ge=1)
    redis_pool_timeout_s: float = Field(REDIS_POOL_TIMEOUT_S, gt=0)


class CacheConfig(_Section):
    enabled: bool = False
    max_size: int = Field(1000, ge=1)
    ttl_seconds: float = Field(3600.0, gt=0)
    # Bytes of the stored answers (as JSON), LRU-evicted beyond it; an answer over max_entry_bytes (None: a
    # sixteenth of max_bytes) is not stored.
    max_bytes: int = Field(DEFAULT_MAX_BYTES, ge=1024)
    max_entry_bytes: int | None = Field(None, ge=1)


class StorageConfig(_Section):
    data_dir: str = "./data"
    database_url: str | None = None  # None: SQLite in data_dir
    redis_url: str | None = None
    # Days a stored /v1/responses answer is kept (counted from its creation), then purged; None: kept until deleted.
    responses_retention_days: float | None = Field(30.0, gt=0)


class Settings(BaseSettings):
    """Every setting of the server, grouped as the YAML sections are."""

    model_config = SettingsConfigDict(extra="forbid", validate_assignment=True)

    env: Literal["production", "development"] = "development"
    server: ServerConfig = Field(default_factory=ServerConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    rate_limit: RateLimitConfig = Field(default_factory=RateLimitConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    config_file: str | None = None  # the YAML file these settings came from (for logs and /admin/config)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only explicit init values: load_settings() merges YAML and environment itself.
        return (init_settings,)

    @model_validator(mode="after")
    def _check_production(self) -> Settings:
        if self.env != "production" or not self.auth_required:
            return self
        if not self.security.api_key:
            raise ValueError("security.api_key (GENERATION_API_KEY) is required when auth is enabled in production")
        if len(self.security.api_key) < 16 or self.security.api_key.lower() in PLACEHOLDER_SECRETS:
            raise ValueError("security.api_key (GENERATION_API_KEY) must be a real secret of at least 16 characters")
        secret = self.security.secret_key
        if secret is not None and (len(secret) < 32 or secret.lower() in PLACEHOLDER_SECRETS):
            raise ValueError("security.secret_key (GENERATION_SECRET_KEY) must be at least 32 random characters")
        return self

    @property
    def auth_required(self) -> bool:
        if self.security.auth_enabled is not None:
            return self.security.auth_enabled
        return self.env == "production"

    @property
    def log_level(self) -> str:
        if self.server.log_level is not None:
            return self.server.log_level
        return "debug" if self.env == "development" or self.server.debug else "info"

    @property
    def data_dir(self) -> Path:
        return Path(self.storage.data_dir)

    @property
    def database_url(self) -> str:
        if self.storage.database_url:
            return self.storage.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'tkr-embed.db').resolve()}"

    @property
    def demo_model_dir(self) -> Path:
        return self.data_dir / "demo-model"

    def engine_args(self, model_path: str | Path) -> EngineArgs:
        """What the engine is built from (`tkr_embed.builder.build_engine`), for the checkpoint at `model_path`."""
        model, engine = self.model, self.engine
        return EngineArgs(
            model=str(model_path),
            device=model.device,  # "gpu" is CUDA, or MLX Metal on a Mac: the backend factory decides
            dtype=None if model.dtype == "auto" else model.dtype,
            quantization=model.quantization,
            max_num_seqs=engine.max_num_seqs,
            max_num_batched_tokens=engine.max_num_batched_tokens,
            max_num_batched_tokens_idle=engine.max_num_batched_tokens_idle,
            max_waiting=engine.max_waiting,
            block_size=engine.block_size,
            num_kv_blocks=engine.kv_cache_blocks,
            kv_cache_memory_fraction=engine.kv_cache_memory_fraction,
            enable_prefix_caching=engine.enable_prefix_caching,
            max_model_len=engine.max_model_len,
            lookahead=engine.lookahead,
            warm_up=engine.warm_up,
            cpu_threads=engine.cpu_threads,
        )

    @property
    def uses_demo_model(self) -> bool:
        return not self.model.path


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        if item["type"] == "extra_forbidden":
            lines.append(f"unknown key {key!r}")
        elif key:
            lines.append(f"{key}: {item['msg']}")
        else:
            lines.append(item["msg"].removeprefix("Value error, "))
    return "invalid configuration: " + "; ".join(lines)


def load_settings(
    config_path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    search_dir: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the settings: defaults < YAML < GENERATION_* environment < `overrides` (the command line's flags, as
    {section: {field: value}}, plus "env" to pick the file as GENERATION_ENV does). Raises ConfigError."""
    environ = os.environ if environ is None else environ
    overrides = dict(overrides or {})
    env_name = overrides.pop("env", None) or environ.get(ENV_PREFIX + "ENV") or None
    if config_path is not None:
        path: Path | None = Path(config_path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
    else:
        path = pick_config_file(env_name, Path(search_dir) if search_dir is not None else Path.cwd())
    file_data = read_yaml(path) if path is not None else {}
    if env_name is None:
        # The file decides when GENERATION_ENV is unset: config.dev.yaml says development.
        env_name = file_data.get("env") or env_of_file(path)
    env_data = EnvSource(Settings, environ)()
    merged = merge(merge(file_data, env_data), overrides)
    if env_name is not None:
        merged["env"] = env_name
    merged["config_file"] = str(path) if path is not None else None
    try:
        return Settings(**merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def settings_for_command(config_path: str | Path | None) -> Settings | None:
    """A command's settings (`tkr-embed db`, `tkr-embed responses`); None once a ConfigError was printed on stderr,
    for the command to exit with status 2."""
    try:
        return load_settings(config_path)
    except ConfigError as error:
        print(f"tkr-embed: {error}", file=sys.stderr)
        return None
