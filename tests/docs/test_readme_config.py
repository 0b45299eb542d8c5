"""The README's configuration table is what the settings code does, with no YAML file and with each file."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _config_table():
    spec = importlib.util.spec_from_file_location("config_table", ROOT / "scripts" / "config_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_table_is_the_one_the_settings_give() -> None:
    table = _config_table()
    readme = (ROOT / "README.md").read_text()
    begin, end = readme.index(table.BEGIN), readme.index(table.END) + len(table.END)
    assert readme[begin:end] == table.render(), "README.md's table is stale: run scripts/config_table.py"


def test_the_table_shows_what_a_missing_file_means() -> None:
    rendered = _config_table().render().splitlines()
    auth = next(line for line in rendered if "`GENERATION_AUTH_ENABLED`" in line)
    host = next(line for line in rendered if "`GENERATION_HOST`" in line)
    # no YAML file, config.dev.yaml, config.yaml
    assert auth.endswith("| off | off | on |")
    assert host.endswith("| `127.0.0.1` | `127.0.0.1` | `0.0.0.0` |")
