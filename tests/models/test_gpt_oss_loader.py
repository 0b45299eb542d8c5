"""Checkpoint loading: single and sharded files, expert formats, and a clear error for each broken folder."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from gpt_oss_helpers import PagedRunner, random_prompt
from safetensors.torch import save_file

from tkr_embed.models.gpt_oss.config import GptOssConfig
from tkr_embed.models.gpt_oss.demo import DEMO_CONFIG, demo_tensors, write_demo_checkpoint
from tkr_embed.models.gpt_oss.loader import CheckpointError, load_model
from tkr_embed.models.gpt_oss.mxfp4 import dequantize_mxfp4

SMALL = dataclasses.replace(DEMO_CONFIG, vocab_size=256, num_hidden_layers=2, layer_types=[])


def write_small(folder: Path, tensors: dict[str, torch.Tensor] | None = None, **config_overrides) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    raw = SMALL.to_hf_dict()
    raw.update(config_overrides)
    (folder / "config.json").write_text(json.dumps(raw))
    save_file(tensors if tensors is not None else demo_tensors(SMALL, seed=0), str(folder / "model.safetensors"))
    return folder


def load(folder: Path, **kwargs):
    return load_model(folder, dtype=torch.float32, verbose=False, **kwargs)


def all_params(model) -> dict[str, torch.Tensor]:
    return dict(model.named_parameters())


# -- successful loads ---------------------------------------------------------------------------------


def test_demo_config_reads_back_with_generation_stop_tokens(demo_model_dir):
    config = GptOssConfig.from_pretrained(demo_model_dir)
    assert config == DEMO_CONFIG
    assert config.eos_token_id == [200002, 199999, 200012]
    assert config.layer_types == ["sliding_attention", "full_attention"] * 2
    raw = json.loads((demo_model_dir / "config.json").read_text())
    assert raw["quantization_config"]["quant_method"] == "mxfp4"
    assert raw["architectures"] == ["GptOssForCausalLM"]


def test_transformers5_style_rope_parameters_are_understood():
    raw = SMALL.to_hf_dict()
    rope = dict(raw.pop("rope_scaling"), rope_theta=raw.pop("rope_theta"))
    config = GptOssConfig.from_dict({**raw, "rope_parameters": rope})
    assert config.rope_theta == SMALL.rope_theta and config.rope_scaling == SMALL.rope_scaling


def test_sharded_demo_checkpoint_loads_identically(demo_model_dir, model_fp32, tmp_path):
    sharded = write_demo_checkpoint(tmp_path / "sharded", num_shards=3)
    shards = sorted(p.name for p in sharded.glob("*.safetensors"))
    assert shards == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    loaded = all_params(load(sharded))
    expected = all_params(model_fp32)
    assert loaded.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.equal(loaded[name], value), name


def test_experts_stay_mxfp4_by_default_and_dequantize_with_none(demo_model_dir, model_fp32):
    experts = model_fp32.model.layers[0].mlp.experts
    assert experts.gate_up_proj_blocks.dtype == torch.uint8
    assert experts.gate_up_proj_blocks.shape == (8, 128, 2, 16)
    dense = load(demo_model_dir, quantization="none")
    dense_experts = dense.model.layers[0].mlp.experts
    assert dense_experts.gate_up_proj.shape == (8, 128, 64) and dense_experts.gate_up_proj.dtype == torch.float32
    assert torch.equal(
        dense_experts.down_proj,
        dequantize_mxfp4(experts.down_proj_blocks, experts.down_proj_scales, torch.float32),
    )
    prompt = random_prompt(20, seed=5)
    torch.testing.assert_close(
        PagedRunner(dense).step([(0, prompt)])[0], PagedRunner(model_fp32).step([(0, prompt)])[0], atol=1e-5, rtol=0
    )


def test_checkpoint_with_dense_experts_loads_to_the_same_weights(tmp_path):
    tensors = demo_tensors(SMALL, seed=0)
    dense_tensors = {}
    for name, value in tensors.items():
        if name.endswith("_scales"):
            continue
        if name.endswith("_blocks"):
            prefix = name.removesuffix("_blocks")
            weight = dequantize_mxfp4(value, tensors[prefix + "_scales"], torch.bfloat16)  # [E, out, in]
            dense_tensors[prefix] = weight.transpose(1, 2).contiguous()  # disk: [E, in, out]
        else:
            dense_tensors[name] = value
    mxfp4_model = load(write_small(tmp_path / "q"))
    dense_folder = write_small(tmp_path / "d", dense_tensors)
    reference_params = all_params(mxfp4_model)
    for quantization in ("mxfp4", "none"):
        model = load(dense_folder, quantization=quantization)
        for i, layer in enumerate(model.model.layers):
            # requantized blocks may pick other (equivalent) codes and scales: compare the values
            reference_experts = mxfp4_model.model.layers[i].mlp.experts
            for e in range(8):
                for ours, expected in zip(
                    layer.mlp.experts.expert_weights(e), reference_experts.expert_weights(e), strict=False
                ):
                    assert torch.equal(ours, expected), (quantization, i, e)
        for name, value in all_params(model).items():
            if "experts" not in name or name.endswith("_bias"):
                assert torch.equal(value, reference_params[name]), name


def test_memory_estimate_is_printed_before_loading(tmp_path, capsys):
    load_model(write_small(tmp_path / "m"), dtype=torch.float32)
    assert "GiB of weights" in capsys.readouterr().err


# -- errors ---------------------------------------------------------------------------------------------


def test_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load(tmp_path / "nowhere")


def test_missing_config_file(tmp_path):
    folder = write_small(tmp_path / "m")
    (folder / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"config\.json: file not found"):
        load(folder)


def test_missing_weights_file(tmp_path):
    folder = write_small(tmp_path / "m")
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors: file not found"):
        load(folder)


@pytest.mark.parametrize(
    "model_type,architectures", [("llama", ["LlamaForCausalLM"]), ("gpt_oss", ["MixtralForCausalLM"])]
)
def test_architecture_that_is_not_gpt_oss(tmp_path, model_type, architectures):
    folder = write_small(tmp_path / "m", model_type=model_type, architectures=architectures)
    with pytest.raises(CheckpointError, match=r"config\.json.*is not a gpt-oss checkpoint"):
        load(folder)


def test_truncated_safetensors(tmp_path):
    folder = write_small(tmp_path / "m")
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a readable safetensors file"):
        load(folder)


def test_corrupt_safetensors_header(tmp_path):
    folder = write_small(tmp_path / "m")
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[8:40] = b"\xff" * 32
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a readable safetensors file"):
        load(folder)


def test_missing_tensor(tmp_path):
    tensors = demo_tensors(SMALL, seed=0)
    del tensors["model.layers.1.self_attn.sinks"]
    with pytest.raises(CheckpointError, match=r"tensor model\.layers\.1\.self_attn\.sinks is missing"):
        load(write_small(tmp_path / "m", tensors))


def test_extra_tensor(tmp_path):
    tensors = demo_tensors(SMALL, seed=0)
    tensors["model.layers.0.mlp.shared_expert.weight"] = torch.zeros(4, dtype=torch.bfloat16)
    with pytest.raises(
        CheckpointError, match=r"model\.safetensors: unexpected tensor model\.layers\.0\.mlp\.shared_expert\.weight"
    ):
        load(write_small(tmp_path / "m", tensors))


def test_wrong_shape(tmp_path):
    tensors = demo_tensors(SMALL, seed=0)
    tensors["model.layers.0.self_attn.k_proj.weight"] = torch.zeros(16, 64, dtype=torch.bfloat16)
    with pytest.raises(
        CheckpointError,
        match=r"model\.safetensors: tensor model\.layers\.0\.self_attn\.k_proj\.weight "
        r"has shape \[16, 64\], expected \[32, 64\]",
    ):
        load(write_small(tmp_path / "m", tensors))


def test_wrong_dtype_for_mxfp4_blocks(tmp_path):
    tensors = demo_tensors(SMALL, seed=0)
    name = "model.layers.1.mlp.experts.down_proj_scales"
    tensors[name] = tensors[name].to(torch.bfloat16)
    expected = rf"model\.safetensors: tensor {name.replace('.', '[.]')} has dtype torch.bfloat16, expected uint8"
    with pytest.raises(CheckpointError, match=expected):
        load(write_small(tmp_path / "m", tensors))


def test_shard_listed_in_index_but_absent(tmp_path):
    folder = write_demo_checkpoint(tmp_path / "sharded", num_shards=2)
    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model-00002-of-00002\.safetensors: file not found"):
        load(folder)


def test_index_names_a_tensor_its_shard_lacks(tmp_path):
    folder = write_demo_checkpoint(tmp_path / "sharded", num_shards=2)
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["model.layers.9.self_attn.sinks"] = "model-00001-of-00002.safetensors"
    index_path.write_text(json.dumps(index))
    with pytest.raises(
        CheckpointError, match=r"model-00001-of-00002\.safetensors: tensor model\.layers\.9\.self_attn\.sinks is listed"
    ):
        load(folder)


def test_unknown_quantization_setting(tmp_path):
    with pytest.raises(ValueError, match="quantization must be one of"):
        load(write_small(tmp_path / "m"), quantization="q4")
