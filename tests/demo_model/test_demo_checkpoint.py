"""The shipped demo weights expand to a Hub-layout checkpoint that our loader and transformers both read alike."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from tkr_embed.api.engine_factory import ensure_demo_checkpoint
from tkr_embed.models.gpt_oss.checkpoint import SINGLE_FILE
from tkr_embed.models.gpt_oss.demo_trained import (
    DIGEST_FILE,
    TRAINED_CONFIG,
    VOCAB_IDS,
    shipped_weights,
    weights_digest,
)

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_demo_checkpoint(tmp_path_factory.mktemp("trained") / "demo")


def test_the_shipped_weights_are_small_and_packaged() -> None:
    assert shipped_weights().stat().st_size < 5_000_000
    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert '"tkr_embed.models.gpt_oss" = ["demo_weights.safetensors"]' in pyproject


def test_unused_ids_share_the_other_row_and_experts_stay_mxfp4(trained_dir: Path) -> None:
    config = json.loads((trained_dir / "config.json").read_text())
    assert config["vocab_size"] == 201088 and config["quantization_config"]["quant_method"] == "mxfp4"
    with safe_open(str(shipped_weights()), framework="pt") as shipped:
        vocab_ids = shipped.get_tensor(VOCAB_IDS).long()
    with safe_open(str(trained_dir / SINGLE_FILE), framework="pt") as written:
        embed = written.get_tensor("model.embed_tokens.weight")
        lm_head = written.get_tensor("lm_head.weight")
        blocks = written.get_tensor("model.layers.0.mlp.experts.gate_up_proj_blocks")
    assert embed.shape == lm_head.shape == (201088, TRAINED_CONFIG.hidden_size)
    unused = torch.ones(201088, dtype=torch.bool)
    unused[vocab_ids] = False
    for rows in (embed, lm_head):
        assert torch.equal(rows[unused], rows[unused][:1].expand(int(unused.sum()), -1))
        assert not torch.equal(rows[vocab_ids[0]], rows[unused][0])
    assert blocks.dtype == torch.uint8 and blocks.shape[-1] == 16


def test_a_checkpoint_of_other_weights_is_written_again(trained_dir: Path, tmp_path: Path) -> None:
    stale = tmp_path / "demo"
    stale.mkdir()
    (stale / "config.json").write_text("{}")  # an old random-weight demo folder
    (stale / DIGEST_FILE).write_text("0" * 64)
    ensure_demo_checkpoint(stale)
    assert (stale / DIGEST_FILE).read_text().strip() == weights_digest()
    assert (stale / "config.json").read_text() == (trained_dir / "config.json").read_text()


def test_our_model_matches_transformers_on_the_trained_checkpoint(trained_dir: Path) -> None:
    from transformers import GptOssForCausalLM as ReferenceModel
    from transformers import Mxfp4Config

    from tkr_embed.backends.torch.attention import allocate_kv_cache, build_attention_metadata
    from tkr_embed.harmony.tokenizer import get_encoding
    from tkr_embed.models.gpt_oss.loader import load_model

    prompt = get_encoding().encode(
        "<|start|>user<|message|>What is 17 + 25?<|end|><|start|>assistant", allowed_special="all"
    )
    reference = ReferenceModel.from_pretrained(
        str(trained_dir), dtype=torch.float32, quantization_config=Mxfp4Config(dequantize=True)
    ).to(torch.float32)
    with torch.no_grad():
        expected = reference(input_ids=torch.tensor([prompt])).logits[0].float()  # [T, V]
        ours = load_model(trained_dir, dtype=torch.float32, verbose=False)
        kv_caches = allocate_kv_cache(ours.config, 4, 16, dtype=torch.float32, device="cpu")
        metadata = build_attention_metadata([(0, len(prompt), [0, 1, 2, 3])], 16, "cpu")
        hidden = ours(torch.tensor(prompt), torch.arange(len(prompt)), kv_caches, metadata)
        logits = ours.compute_logits(hidden)
    assert (logits - expected).abs().max().item() < 2e-3
    assert torch.equal(logits.argmax(-1), expected.argmax(-1))


def test_the_cli_writes_the_trained_model_and_random_weights_on_request(tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tkr_embed.cli", "demo-model", *args], capture_output=True, text=True
        )

    trained = cli(str(tmp_path / "trained"))
    assert trained.returncode == 0 and "trained tkr-embed demo model" in trained.stdout
    assert (tmp_path / "trained" / DIGEST_FILE).is_file()
    random = cli(str(tmp_path / "random"), "--random", "--seed", "3")
    assert random.returncode == 0 and "random weights" in random.stdout
    assert json.loads((tmp_path / "random" / "config.json").read_text())["hidden_size"] == 64
    refused = cli(str(tmp_path / "other"), "--shards", "2")
    assert refused.returncode == 2 and "--random" in refused.stderr
