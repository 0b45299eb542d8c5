"""Settings: defaults < YAML < GENERATION_* env; the file GENERATION_ENV picks; refusals name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from tkr_embed.config import ConfigError, load_settings

REPO = Path(__file__).resolve().parents[1]
STRONG_KEY = "k" * 32


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_shipped_files_load(tmp_path):
    dev = load_settings(environ={"GENERATION_ENV": "development"}, search_dir=REPO)
    assert (dev.env, dev.auth_required, dev.log_level) == ("development", False, "debug")
    assert dev.config_file.endswith("config.dev.yaml")
    prod = load_settings(environ={"GENERATION_ENV": "production", "GENERATION_API_KEY": STRONG_KEY}, search_dir=REPO)
    assert (prod.env, prod.auth_required, prod.server.port, prod.log_level) == ("production", True, 8008, "info")
    assert prod.config_file.endswith("config.yaml")


def test_unset_env_prefers_the_dev_file(tmp_path):
    write(tmp_path / "config.yaml", "server: {port: 9001}\n")
    with pytest.raises(ConfigError, match="GENERATION_API_KEY"):
        load_settings(environ={}, search_dir=tmp_path)  # config.yaml alone means production
    assert load_settings(environ={"GENERATION_API_KEY": STRONG_KEY}, search_dir=tmp_path).env == "production"
    write(tmp_path / "config.dev.yaml", "server: {port: 9002}\n")
    settings = load_settings(environ={}, search_dir=tmp_path)
    assert (settings.env, settings.server.port, settings.auth_required) == ("development", 9002, False)


def test_precedence_defaults_yaml_env(tmp_path):
    write(tmp_path / "config.dev.yaml", "server: {port: 9002, host: 0.0.0.0}\nengine: {max_waiting: 5}\n")
    settings = load_settings(
        environ={
            "GENERATION_PORT": "9100",
            "GENERATION_ENGINE__MAX_NUM_SEQS": "3",
            "GENERATION_QUANTIZATION": "q8",
            "GENERATION_RATE_LIMIT_RPM": "7",
            "GENERATION_DATA_DIR": str(tmp_path / "d"),
        },
        search_dir=tmp_path,
    )
    assert settings.server.port == 9100  # env beats YAML
    assert settings.server.host == "0.0.0.0"  # YAML beats default
    assert settings.engine.max_waiting == 5
    assert settings.engine.max_num_seqs == 3
    assert settings.engine.max_num_batched_tokens == 8192  # default
    assert settings.engine.max_num_batched_tokens_idle is None  # default: 4x on CUDA (device.idle_step_tokens)
    assert settings.model.quantization == "q8"
    assert settings.rate_limit.requests_per_minute == 7
    assert settings.database_url.endswith("/d/tkr-embed.db")
    assert settings.uses_demo_model and settings.demo_model_dir == tmp_path / "d" / "demo-model"


@pytest.mark.parametrize(
    ("yaml_text", "environ", "named"),
    [
        ("server: {prot: 1}\n", {}, "server.prot"),
        ("sever: {port: 1}\n", {}, "sever"),
        ("server: {port: 99999}\n", {}, "server.port"),
        ("model: {quantization: q3}\n", {}, "model.quantization"),
        ("", {"GENERATION_DEVICE": "tpu"}, "model.device"),
        ("", {"GENERATION_PORT": "eighty"}, "server.port"),
        ("", {"GENERATION_CACHE_ENABLED": "perhaps"}, "cache.enabled"),
        ("", {"GENERATION_BOGUS": "1"}, "GENERATION_BOGUS"),
        ("", {"GENERATION_NOPE__X": "1"}, "GENERATION_NOPE__X"),
        ("server: [1, 2]\n", {}, "server"),
    ],
)
def test_bad_keys_and_values_are_refused_by_name(tmp_path, yaml_text, environ, named):
    write(tmp_path / "config.dev.yaml", yaml_text)
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_settings(environ=environ, search_dir=tmp_path)


def test_production_refuses_to_start_without_an_api_key(tmp_path):
    write(tmp_path / "config.yaml", "security: {auth_enabled: true}\n")
    with pytest.raises(ConfigError, match="GENERATION_API_KEY"):
        load_settings(environ={"GENERATION_ENV": "production"}, search_dir=tmp_path)
    with pytest.raises(ConfigError, match="GENERATION_API_KEY"):
        load_settings(environ={"GENERATION_ENV": "production", "GENERATION_API_KEY": "change-me"}, search_dir=tmp_path)
    ok = load_settings(environ={"GENERATION_ENV": "production", "GENERATION_API_KEY": STRONG_KEY}, search_dir=tmp_path)
    assert ok.security.api_key == STRONG_KEY


def test_bad_env_name_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="GENERATION_ENV"):
        load_settings(environ={"GENERATION_ENV": "staging"}, search_dir=tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.yaml", environ={})
