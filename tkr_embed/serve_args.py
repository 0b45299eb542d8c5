"""Arguments of `tkr-embed serve`: the flags `vllm serve` users know, and one flag for every setting.

Every key of the settings (tkr_embed/config.py) is a flag spelled like its YAML key, with dashes for
underscores: `engine.max_num_seqs` is `--engine.max-num-seqs 128`, `rate_limit.enabled` is `--rate-limit.enabled`,
`server.cors_origins` is `--server.cors-origins A B`. A flag beats its GENERATION_* variable, which beats the YAML
file. A boolean flag alone means true (`--engine.lookahead false` turns it off); `none` (or an empty value) unsets a
key that may be unset. A bad value stops the command before anything starts, naming the flag (exit status 2).

The shortcuts, as `vllm serve` spells them: MODEL or `--model` (model.path), `--served-model-name NAME [NAME ...]`
(model.name, then model.aliases), `--api-key KEY` (security.api_key, authentication on), `--max-model-len`
(engine.max_model_len), `--host` and `--port` (server.host, server.port). Kept apart from the server so that
`--help` needs no FastAPI or torch.
"""

from __future__ import annotations

import argparse
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from tkr_embed.config import Settings
from tkr_embed.config_sources import ENV_PREFIX, FLAT_ENV_NAMES, ConfigError

SETTING_DEST = "setting:"  # the argparse dest of a setting's flag: "setting:engine.max_num_seqs"
# Settings flags that also answer to vLLM's name for them.
SHORTCUTS: dict[tuple[str, str], str] = {
    ("model", "path"): "--model",
    ("server", "host"): "--host",
    ("server", "port"): "--port",
    ("engine", "max_model_len"): "--max-model-len",
}
_UNSET_WORDS = frozenset({"", "none", "null"})
_ENV_OF_KEY = {key: f"{ENV_PREFIX}{name}" for name, key in FLAT_ENV_NAMES.items()}


@dataclass(frozen=True)
class SettingFlag:
    """One setting as a command-line flag."""

    section: str
    name: str
    field: FieldInfo

    @property
    def flag(self) -> str:
        return f"--{self.section}.{self.name}".replace("_", "-")

    @property
    def dest(self) -> str:
        return f"{SETTING_DEST}{self.section}.{self.name}"

    @property
    def env_name(self) -> str:
        return _ENV_OF_KEY.get((self.section, self.name), f"{ENV_PREFIX}{self.section.upper()}__{self.name.upper()}")

    @property
    def value_type(self) -> Any:
        """The annotation without `| None`."""
        return _without_none(self.field.annotation)

    @property
    def nullable(self) -> bool:
        return _without_none(self.field.annotation) is not self.field.annotation

    @property
    def is_list(self) -> bool:
        return get_origin(self.value_type) is list

    @property
    def is_bool(self) -> bool:
        return self.value_type is bool


def _without_none(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        members = [member for member in get_args(annotation) if member is not type(None)]
        if len(members) == 1:
            return members[0]
    return annotation


def setting_flags() -> Iterator[SettingFlag]:
    """Every key of every section of the settings, in the order the settings declare them."""
    for section, section_field in Settings.model_fields.items():
        model = section_field.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            for name, field in model.model_fields.items():
                yield SettingFlag(section, name, field)


def _converter(setting: SettingFlag) -> Callable[[str], Any]:
    """The argparse `type` of a flag: one command-line word, checked as the settings check the key's value."""
    if setting.is_list:
        adapter: TypeAdapter[Any] = TypeAdapter(get_args(setting.value_type)[0])
    elif setting.field.metadata:  # the bounds (ge=1, ...) travel as metadata
        adapter = TypeAdapter(Annotated[setting.field.annotation, *setting.field.metadata])
    else:
        adapter = TypeAdapter(setting.field.annotation)

    def convert(word: str) -> Any:
        if setting.nullable and word.strip().lower() in _UNSET_WORDS:
            return None
        try:
            return adapter.validate_python(word)
        except ValidationError as exc:
            raise argparse.ArgumentTypeError(f"{word!r}: {exc.errors()[0]['msg']}") from None

    return convert


def _metavar(setting: SettingFlag) -> str:
    value_type = get_args(setting.value_type)[0] if setting.is_list else setting.value_type
    if get_origin(value_type) is Literal:
        return "{" + ",".join(str(choice) for choice in get_args(value_type)) + "}"
    return {bool: "BOOL", int: "INT", float: "FLOAT"}.get(value_type, "TEXT")


def _help(setting: SettingFlag) -> str:
    default = setting.field.get_default(call_default_factory=True)
    shown = "none" if default is None else (" ".join(default) or "[]") if isinstance(default, list) else default
    if isinstance(shown, bool):
        shown = str(shown).lower()
    return f"default {shown}; env {setting.env_name}".replace("%", "%%")


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_positional", nargs="?", metavar="MODEL", help="checkpoint folder (model.path)")
    parser.add_argument("--config", default=None, help="YAML config file (default: picked by GENERATION_ENV)")
    parser.add_argument(
        "--env",
        choices=("production", "development"),
        default=None,
        help="production or development: picks the YAML file and the defaults, as GENERATION_ENV does",
    )
    parser.add_argument(
        "--served-model-name",
        nargs="+",
        action="extend",
        default=argparse.SUPPRESS,
        metavar="NAME",
        help="the model's names in the API: the first is the one answers carry and /v1/models lists first; "
        "requests may name any (model.name, model.aliases)",
    )
    parser.add_argument(
        "--api-key",
        default=argparse.SUPPRESS,
        metavar="KEY",
        help="requests must carry this key (Authorization: Bearer KEY): the master key, with authentication on "
        "(security.api_key, security.auth_enabled). GENERATION_API_KEY keeps it out of the process list",
    )
    groups: dict[str, argparse._ArgumentGroup] = {}
    for setting in setting_flags():
        if setting.section not in groups:
            groups[setting.section] = parser.add_argument_group(
                f"{setting.section} settings",
                f"the YAML section {setting.section}; env {ENV_PREFIX}{setting.section.upper()}__<KEY>",
            )
        names = [setting.flag]
        if (setting.section, setting.name) in SHORTCUTS:
            names.insert(0, SHORTCUTS[setting.section, setting.name])
        options: dict[str, Any] = {
            "dest": setting.dest,
            "default": argparse.SUPPRESS,
            "type": _converter(setting),
            "metavar": _metavar(setting),
            "help": _help(setting),
        }
        if setting.is_list:
            options.update(nargs="*", action="extend")
        elif setting.is_bool:
            options.update(nargs="?", const=True)
        groups[setting.section].add_argument(*names, **options)


def settings_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The flags given, as `load_settings(overrides=...)` takes them. Raises ConfigError when MODEL and --model
    disagree."""
    overrides: dict[str, Any] = {}

    def put(section: str, name: str, value: Any) -> None:
        overrides.setdefault(section, {})[name] = value

    for dest, value in vars(args).items():
        if dest.startswith(SETTING_DEST):
            section, _, name = dest[len(SETTING_DEST) :].partition(".")
            put(section, name, value)
    if args.model_positional is not None:
        flagged = overrides.get("model", {}).get("path")
        if flagged is not None and flagged != args.model_positional:
            raise ConfigError(f"MODEL ({args.model_positional}) and --model ({flagged}) name different models")
        put("model", "path", args.model_positional)
    names = list(dict.fromkeys(getattr(args, "served_model_name", [])))
    if names:
        put("model", "name", names[0])
        put("model", "aliases", names[1:])
    if hasattr(args, "api_key"):
        put("security", "api_key", args.api_key)
        overrides["security"].setdefault("auth_enabled", True)
    if args.env is not None:
        overrides["env"] = args.env
    return overrides
