"""`tkr-embed serve` flags: one per setting and vLLM's shortcuts, flags > GENERATION_* env > YAML, a bad value refused
by the flag's name before anything starts, `--version`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tkr_embed import __version__
from tkr_embed.cli import build_parser, main
from tkr_embed.config import ConfigError, Settings, load_settings
from tkr_embed.serve_args import setting_flags, settings_overrides

REPO = Path(__file__).resolve().parents[1]
STRONG_KEY = "flag-master-key-0123456789abcdef"


def settings_of(argv: list[str], tmp_path: Path, environ: dict[str, str] | None = None) -> Settings:
    """The settings `tkr-embed serve ARGV` would run with, in a folder holding no YAML file unless the test wrote
    one."""
    args = build_parser().parse_args(["serve", *argv])
    return load_settings(args.config, environ=environ or {}, search_dir=tmp_path, overrides=settings_overrides(args))


def test_every_setting_is_a_flag_that_help_lists(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    flags = [setting.flag for setting in setting_flags()]
    assert len(flags) > 60  # every section's keys, not a handful
    assert [flag for flag in flags if f"{flag} " not in text] == []
    for shortcut in ("--model", "--served-model-name", "--api-key", "--max-model-len", "--host", "--port"):
        assert shortcut in text


def test_flags_beat_the_environment_which_beats_yaml(tmp_path: Path) -> None:
    (tmp_path / "config.dev.yaml").write_text(
        "server: {port: 9002, header_timeout_s: 3}\nengine: {max_waiting: 5, max_num_seqs: 3}\n"
    )
    environ = {"GENERATION_PORT": "9003", "GENERATION_ENGINE__MAX_WAITING": "7"}
    settings = settings_of(["--port", "9004"], tmp_path, environ)
    assert settings.server.port == 9004  # flag over env and YAML
    assert settings.engine.max_waiting == 7  # env over YAML
    assert (settings.engine.max_num_seqs, settings.server.header_timeout_s) == (3, 3.0)  # YAML over defaults
    flagged = settings_of(["--engine.max-waiting", "9", "--server.header-timeout-s", "4.5"], tmp_path, environ)
    assert (flagged.engine.max_waiting, flagged.server.header_timeout_s) == (9, 4.5)


def test_vllm_style_shortcuts_fill_their_settings(tmp_path: Path) -> None:
    settings = settings_of(
        [
            "/models/gpt-oss-20b",
            "--served-model-name",
            "gpt-oss",
            "openai/gpt-oss-20b",
            "--api-key",
            STRONG_KEY,
            "--max-model-len",
            "2048",
            "--host",
            "0.0.0.0",
            "--port",
            "9100",
        ],
        tmp_path,
    )
    assert settings.model.path == "/models/gpt-oss-20b"
    assert (settings.model.name, settings.model.aliases) == ("gpt-oss", ["openai/gpt-oss-20b"])
    assert settings.security.api_key == STRONG_KEY and settings.auth_required  # on although development
    assert settings.engine.max_model_len == 2048
    assert (settings.server.host, settings.server.port) == ("0.0.0.0", 9100)
    assert settings_of(["--model", "/m"], tmp_path).model.path == "/m"


def test_served_model_names_may_be_repeated_or_listed(tmp_path: Path) -> None:
    settings = settings_of(["--served-model-name", "a", "--served-model-name", "b", "c", "a"], tmp_path)
    assert (settings.model.name, settings.model.aliases) == ("a", ["b", "c"])


def test_an_explicit_auth_flag_beats_the_api_key_shortcut(tmp_path: Path) -> None:
    settings = settings_of(["--api-key", STRONG_KEY, "--security.auth-enabled", "false"], tmp_path)
    assert settings.security.api_key == STRONG_KEY and not settings.auth_required


def test_booleans_lists_and_unset_values(tmp_path: Path) -> None:
    settings = settings_of(
        [
            "--engine.lookahead",
            "false",
            "--engine.enable-prefix-caching",
            "--engine.kv-cache-blocks",
            "none",
            "--server.cors-origins",
            "https://a.example",
            "https://b.example",
            "--rate-limit.enabled",
            "--model.aliases",
            "x",
        ],
        tmp_path,
    )
    assert settings.engine.lookahead is False and settings.engine.enable_prefix_caching is True
    assert settings.engine.kv_cache_blocks is None
    assert settings.server.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.rate_limit.enabled is True and settings.model.aliases == ["x"]
    assert settings_of(["--security.trusted-proxies"], tmp_path).security.trusted_proxies == []


def test_env_flag_picks_the_file_as_generation_env_does(tmp_path: Path) -> None:
    (tmp_path / "config.dev.yaml").write_text("server: {port: 9002}\n")
    (tmp_path / "config.yaml").write_text("server: {port: 9001}\n")
    settings = settings_of(["--env", "production", "--api-key", STRONG_KEY], tmp_path)
    assert (settings.env, settings.server.port, settings.auth_required) == ("production", 9001, True)
    with pytest.raises(ConfigError, match="GENERATION_API_KEY"):
        settings_of(["--env", "production"], tmp_path)


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--engine.max-num-seqs", "0"], "--engine.max-num-seqs: '0': Input should be greater than or equal to 1"),
        (["--model.device", "tpu"], "--model.device: 'tpu'"),
        (["--port", "70000"], "--port/--server.port: '70000'"),
        (["--rate-limit.enabled", "maybe"], "--rate-limit.enabled: 'maybe'"),
        (["--server.log-stats-interval-s", "-1"], "--server.log-stats-interval-s: '-1'"),
        (["--engine.no-such-key", "1"], "unrecognized arguments: --engine.no-such-key"),
    ],
)
def test_a_bad_flag_value_is_refused_by_name(argv: list[str], named: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", *argv])
    assert exited.value.code == 2
    assert named in capsys.readouterr().err


def test_model_and_model_flag_must_agree(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "/models/a", "--model", "/models/b"]) == 2
    assert "MODEL (/models/a) and --model (/models/b) name different models" in capsys.readouterr().err


def run_cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tkr_embed.cli", *argv], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_version_prints_the_package_version(tmp_path: Path) -> None:
    for argv in (["--version"], ["serve", "--version"]):
        completed = run_cli(*argv, cwd=tmp_path)
        assert (completed.returncode, completed.stdout.strip()) == (0, __version__)


def test_the_process_exits_2_naming_the_flag_before_anything_starts(tmp_path: Path) -> None:
    completed = run_cli(
        "serve", "--storage.data-dir", str(tmp_path / "data"), "--engine.max-num-seqs", "0", cwd=tmp_path
    )
    assert completed.returncode == 2
    assert "argument --engine.max-num-seqs: '0'" in completed.stderr
    assert not (tmp_path / "data").exists()  # nothing was written: no demo checkpoint, no database
