"""torch's CPU threads: every usable core but one by default, `engine.cpu_threads` when set."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tkr_embed.backends import cpu_threads
from tkr_embed.backends.factory import create_runner
from tkr_embed.engine.args import EngineArgs
from tkr_embed.engine.errors import ConfigurationError


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(("cpus", "threads"), [(1, 1), (2, 1), (4, 3), (64, 63)])
def test_auto_leaves_one_core_to_the_http_side(cpus: int, threads: int) -> None:
    assert cpu_threads.auto_cpu_threads(cpus) == threads


@pytest.mark.parametrize(
    ("text", "cpus"), [("max 100000\n", None), ("200000 100000\n", 2), ("150000 100000\n", 2), ("50000 100000", 1)]
)
def test_a_cgroup_quota_caps_the_usable_cpus(tmp_path: Path, text: str, cpus: int | None) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text(text)
    assert cpu_threads._cgroup_quota(cpu_max) == cpus
    assert cpu_threads._cgroup_quota(tmp_path / "missing") is None


def test_the_cpu_runner_takes_the_configured_threads(demo_model_dir: Path) -> None:
    torch.set_num_threads(2)
    runner = create_runner(demo_model_dir, device="cpu", num_kv_blocks=8, cpu_threads=1)
    runner.shutdown()
    assert torch.get_num_threads() == 1


def test_the_cpu_runner_takes_the_automatic_count_by_default(demo_model_dir: Path, monkeypatch) -> None:
    monkeypatch.setattr(cpu_threads, "usable_cpus", lambda: 3)
    torch.set_num_threads(1)
    runner = create_runner(demo_model_dir, device="cpu", num_kv_blocks=8)
    runner.shutdown()
    assert torch.get_num_threads() == 2


def test_a_thread_count_below_one_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="cpu_threads"):
        EngineArgs(model="x", cpu_threads=0)
