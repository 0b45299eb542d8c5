"""The gpt-oss checkpoint layout: which tensors a folder must hold, and memory-mapped access to them.

A checkpoint folder holds config.json, optionally generation_config.json, and either one
`model.safetensors` or shards listed by `model.safetensors.index.json`. Experts are MXFP4
(`*_blocks` + `*_scales`, uint8) or, in dequantized checkpoints, dense [E, in, out] tensors
(`gate_up_proj` [E, H, 2I], `down_proj` [E, I, H]); everything else is bf16 (any float accepted).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from tkr_embed.models.gpt_oss.config import GptOssConfig
from tkr_embed.models.gpt_oss.mxfp4 import BLOCK_SIZE, BYTES_PER_BLOCK

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


class CheckpointError(ValueError):
    """The checkpoint cannot be loaded; the message names the file and, when one is at fault, the tensor."""


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    kind: str  # "float" (any floating dtype) or "uint8"

    def accepts(self, dtype: torch.dtype) -> bool:
        return dtype == torch.uint8 if self.kind == "uint8" else dtype.is_floating_point


def tensor_specs(config: GptOssConfig, *, experts_on_disk: str = "mxfp4") -> dict[str, TensorSpec]:
    """Every tensor a Hub-layout checkpoint of this config holds, by name."""
    hidden, inter, experts = config.hidden_size, config.intermediate_size, config.num_local_experts
    q_out = config.num_attention_heads * config.head_dim
    kv_out = config.num_key_value_heads * config.head_dim
    specs: dict[str, TensorSpec] = {
        "model.embed_tokens.weight": TensorSpec((config.vocab_size, hidden), "float"),
        "model.norm.weight": TensorSpec((hidden,), "float"),
        "lm_head.weight": TensorSpec((config.vocab_size, hidden), "float"),
    }
    for i in range(config.num_hidden_layers):
        p = f"model.layers.{i}."
        layer = {
            "input_layernorm.weight": ((hidden,), "float"),
            "post_attention_layernorm.weight": ((hidden,), "float"),
            "self_attn.q_proj.weight": ((q_out, hidden), "float"),
            "self_attn.k_proj.weight": ((kv_out, hidden), "float"),
            "self_attn.v_proj.weight": ((kv_out, hidden), "float"),
            "self_attn.o_proj.weight": ((hidden, q_out), "float"),
            "self_attn.sinks": ((config.num_attention_heads,), "float"),
            "mlp.router.weight": ((experts, hidden), "float"),
            "mlp.router.bias": ((experts,), "float"),
            "mlp.experts.gate_up_proj_bias": ((experts, 2 * inter), "float"),
            "mlp.experts.down_proj_bias": ((experts, hidden), "float"),
        }
        if config.attention_bias:
            layer.update(
                {
                    "self_attn.q_proj.bias": ((q_out,), "float"),
                    "self_attn.k_proj.bias": ((kv_out,), "float"),
                    "self_attn.v_proj.bias": ((kv_out,), "float"),
                    "self_attn.o_proj.bias": ((hidden,), "float"),
                }
            )
        if experts_on_disk == "mxfp4":
            gate_up_groups, down_groups = hidden // BLOCK_SIZE, inter // BLOCK_SIZE
            layer.update(
                {
                    "mlp.experts.gate_up_proj_blocks": ((experts, 2 * inter, gate_up_groups, BYTES_PER_BLOCK), "uint8"),
                    "mlp.experts.gate_up_proj_scales": ((experts, 2 * inter, gate_up_groups), "uint8"),
                    "mlp.experts.down_proj_blocks": ((experts, hidden, down_groups, BYTES_PER_BLOCK), "uint8"),
                    "mlp.experts.down_proj_scales": ((experts, hidden, down_groups), "uint8"),
                }
            )
        else:
            layer.update(
                {
                    "mlp.experts.gate_up_proj": ((experts, hidden, 2 * inter), "float"),
                    "mlp.experts.down_proj": ((experts, inter, hidden), "float"),
                }
            )
        specs.update({p + name: TensorSpec(shape, kind) for name, (shape, kind) in layer.items()})
    return specs


class CheckpointReader:
    """Memory-mapped, name-addressed access to the tensors of a checkpoint folder.

    Use as a context manager; `header_items()` gives (name, dtype, shape) without reading data,
    `read(name)` reads one tensor (a view onto the mapped file until copied).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.weight_map = self._weight_map()  # tensor name -> file name
        self._stack = ExitStack()
        self._handles: dict[str, object] = {}

    def __enter__(self) -> CheckpointReader:
        for file_name in sorted(set(self.weight_map.values())):
            path = self.folder / file_name
            try:
                self._handles[file_name] = self._stack.enter_context(safe_open(str(path), framework="pt"))
            except FileNotFoundError as exc:
                raise CheckpointError(f"{path}: file not found (listed in {INDEX_FILE})") from exc
            except Exception as exc:  # safetensors raises its own error type for corrupt or truncated files
                raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
        self._check_index_against_files()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()
        self._handles.clear()

    def _weight_map(self) -> dict[str, str]:
        if not self.folder.is_dir():
            raise CheckpointError(f"model folder {self.folder} does not exist")
        index_path = self.folder / INDEX_FILE
        if index_path.is_file():
            try:
                weight_map = json.loads(index_path.read_text())["weight_map"]
            except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
                raise CheckpointError(f"{index_path}: not a valid safetensors index ({exc})") from exc
            return {str(k): str(v) for k, v in weight_map.items()}
        single = self.folder / SINGLE_FILE
        if not single.is_file():
            raise CheckpointError(f"{single}: file not found (and no {INDEX_FILE} in {self.folder})")
        try:
            with safe_open(str(single), framework="pt") as handle:
                names = list(handle.keys())
        except Exception as exc:
            raise CheckpointError(f"{single}: not a readable safetensors file ({exc})") from exc
        return {name: SINGLE_FILE for name in names}

    def _check_index_against_files(self) -> None:
        for file_name, handle in self._handles.items():
            present = set(handle.keys())
            for name, listed in self.weight_map.items():
                if listed == file_name and name not in present:
                    raise CheckpointError(
                        f"{self.folder / file_name}: tensor {name} is listed in {INDEX_FILE} but missing from the file"
                    )

    def file_of(self, name: str) -> Path:
        return self.folder / self.weight_map[name]

    def header_items(self) -> Iterator[tuple[str, torch.dtype, tuple[int, ...]]]:
        for name, file_name in self.weight_map.items():
            tensor_slice = self._handles[file_name].get_slice(name)
            yield name, _DTYPES.get(tensor_slice.get_dtype(), torch.float32), tuple(tensor_slice.get_shape())

    def read(self, name: str) -> torch.Tensor:
        try:
            return self._handles[self.weight_map[name]].get_tensor(name)
        except Exception as exc:
            raise CheckpointError(f"{self.file_of(name)}: cannot read tensor {name} ({exc})") from exc

    def total_bytes(self) -> int:
        return sum(self.folder.joinpath(f).stat().st_size for f in set(self.weight_map.values()))


_DTYPES = {
    "BF16": torch.bfloat16,
    "F16": torch.float16,
    "F32": torch.float32,
    "F64": torch.float64,
    "U8": torch.uint8,
    "I8": torch.int8,
    "I16": torch.int16,
    "I32": torch.int32,
    "I64": torch.int64,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}


def detect_expert_format(names: set[str]) -> str:
    """ "mxfp4" if the experts are stored as blocks/scales, else "dense"."""
    return "mxfp4" if any(n.endswith("mlp.experts.gate_up_proj_blocks") for n in names) else "dense"


def validate(reader: CheckpointReader, config: GptOssConfig) -> str:
    """Check names, shapes and dtypes against the config; returns the on-disk expert format."""
    items = {name: (dtype, shape) for name, dtype, shape in reader.header_items()}
    experts_on_disk = detect_expert_format(set(items))
    specs = tensor_specs(config, experts_on_disk=experts_on_disk)
    missing = sorted(set(specs) - set(items))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(f"{reader.folder}: tensor {missing[0]} is missing from the checkpoint{more}")
    extra = sorted(set(items) - set(specs))
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise CheckpointError(f"{reader.file_of(extra[0])}: unexpected tensor {extra[0]}{more}")
    for name, spec in specs.items():
        dtype, shape = items[name]
        if shape != spec.shape:
            raise CheckpointError(
                f"{reader.file_of(name)}: tensor {name} has shape {list(shape)}, expected {list(spec.shape)}"
            )
        if not spec.accepts(dtype):
            raise CheckpointError(f"{reader.file_of(name)}: tensor {name} has dtype {dtype}, expected {spec.kind}")
    return experts_on_disk
