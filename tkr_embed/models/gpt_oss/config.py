"""The gpt-oss model configuration, read from a checkpoint's config.json (Hugging Face field names)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ARCHITECTURE = "GptOssForCausalLM"
MODEL_TYPE = "gpt_oss"

# The Hub's quantization_config: experts are MXFP4, everything listed here stays bf16.
MXFP4_MODULES_NOT_CONVERTED = [
    "model.layers.*.self_attn",
    "model.layers.*.mlp.router",
    "model.embed_tokens",
    "lm_head",
]


class ConfigError(ValueError):
    """config.json is missing, unreadable, or describes a model that is not gpt-oss."""


def _default_yarn() -> dict[str, Any]:
    return {
        "rope_type": "yarn",
        "factor": 32.0,
        "beta_fast": 32.0,
        "beta_slow": 1.0,
        "truncate": False,
        "original_max_position_embeddings": 4096,
    }


def alternating_layer_types(num_layers: int) -> list[str]:
    """Even layers use the sliding window, odd layers attend to the full context."""
    return ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(num_layers)]


@dataclass
class GptOssConfig:
    vocab_size: int = 201088
    hidden_size: int = 2880
    num_hidden_layers: int = 24
    num_attention_heads: int = 64
    num_key_value_heads: int = 8
    head_dim: int = 64
    num_local_experts: int = 32
    num_experts_per_tok: int = 4
    intermediate_size: int = 2880
    sliding_window: int = 128
    layer_types: list[str] = field(default_factory=list)
    rope_theta: float = 150000.0
    rope_scaling: dict[str, Any] = field(default_factory=_default_yarn)
    max_position_embeddings: int = 131072
    rms_norm_eps: float = 1e-5
    swiglu_limit: float = 7.0
    swiglu_alpha: float = 1.702
    attention_bias: bool = True
    tie_word_embeddings: bool = False
    eos_token_id: list[int] = field(default_factory=lambda: [200002, 199999, 200012])
    pad_token_id: int | None = 199999
    bos_token_id: int | None = 199998
    quant_method: str | None = "mxfp4"  # from quantization_config; None: experts stored dense

    def __post_init__(self) -> None:
        if not self.layer_types:
            self.layer_types = alternating_layer_types(self.num_hidden_layers)
        if len(self.layer_types) != self.num_hidden_layers:
            raise ConfigError(f"layer_types has {len(self.layer_types)} entries for {self.num_hidden_layers} layers")
        unknown = set(self.layer_types) - {"sliding_attention", "full_attention"}
        if unknown:
            raise ConfigError(f"unknown layer types {sorted(unknown)}")
        if self.num_attention_heads % self.num_key_value_heads != 0:
            raise ConfigError("num_attention_heads must be a multiple of num_key_value_heads")
        if self.hidden_size % 32 != 0 or self.intermediate_size % 32 != 0:
            raise ConfigError("hidden_size and intermediate_size must be multiples of 32 (MXFP4 blocks)")

    # -- named shapes -------------------------------------------------------------------------

    @classmethod
    def gpt_oss_20b(cls) -> GptOssConfig:
        return cls()

    @classmethod
    def gpt_oss_120b(cls) -> GptOssConfig:
        return cls(num_hidden_layers=36, num_local_experts=128)

    # -- files --------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path: str | Path) -> GptOssConfig:
        """Read config.json (and generation_config.json for the stop tokens) from a checkpoint folder."""
        folder = Path(path)
        config_file = folder / "config.json"
        if not folder.is_dir():
            raise ConfigError(f"model folder {folder} does not exist")
        if not config_file.is_file():
            raise ConfigError(f"{config_file}: file not found")
        try:
            raw = json.loads(config_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{config_file}: not valid JSON ({exc})") from exc
        generation: dict[str, Any] = {}
        generation_file = folder / "generation_config.json"
        if generation_file.is_file():
            try:
                generation = json.loads(generation_file.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise ConfigError(f"{generation_file}: not valid JSON ({exc})") from exc
        return cls.from_dict(raw, generation=generation, source=str(config_file))

    @classmethod
    def from_dict(
        cls, raw: dict[str, Any], *, generation: dict[str, Any] | None = None, source: str = "config"
    ) -> GptOssConfig:
        architectures = raw.get("architectures") or []
        if raw.get("model_type") != MODEL_TYPE or (architectures and ARCHITECTURE not in architectures):
            raise ConfigError(
                f"{source}: model_type {raw.get('model_type')!r} / architectures {architectures} is not "
                f"a gpt-oss checkpoint (expected model_type {MODEL_TYPE!r}, architecture {ARCHITECTURE!r})"
            )
        # transformers>=5 writes rope_parameters (theta inside); the Hub files write rope_scaling + rope_theta.
        rope = dict(raw.get("rope_scaling") or raw.get("rope_parameters") or _default_yarn())
        rope_theta = float(raw.get("rope_theta") or rope.get("rope_theta") or 150000.0)
        rope.pop("rope_theta", None)
        if "type" in rope and "rope_type" not in rope:
            rope["rope_type"] = rope.pop("type")
        eos = (generation or {}).get("eos_token_id", raw.get("eos_token_id"))
        quant = raw.get("quantization_config") or {}
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in raw.items() if k in known}
        kwargs.update(
            rope_scaling=rope,
            rope_theta=rope_theta,
            eos_token_id=_as_id_list(eos),
            quant_method=quant.get("quant_method"),
            layer_types=list(raw.get("layer_types") or []),
        )
        if "num_local_experts" not in raw and "num_experts" in raw:
            kwargs["num_local_experts"] = raw["num_experts"]
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"{source}: {exc}") from exc

    def to_hf_dict(self) -> dict[str, Any]:
        """config.json as the Hub writes it (used by the demo checkpoint)."""
        raw = asdict(self)
        quant_method = raw.pop("quant_method")
        eos = raw.pop("eos_token_id")
        raw.update(
            architectures=[ARCHITECTURE],
            model_type=MODEL_TYPE,
            eos_token_id=eos[0] if eos else None,
            experts_per_token=self.num_experts_per_tok,
            initial_context_length=self.rope_scaling.get("original_max_position_embeddings", 4096),
            hidden_act="silu",
            attention_dropout=0.0,
            initializer_range=0.02,
            output_router_logits=False,
            router_aux_loss_coef=0.9,
            use_cache=True,
            torch_dtype="bfloat16",
        )
        if quant_method is not None:
            raw["quantization_config"] = {
                "quant_method": quant_method,
                "modules_to_not_convert": list(MXFP4_MODULES_NOT_CONVERTED),
            }
        return raw

    @property
    def num_sliding_layers(self) -> int:
        return sum(t == "sliding_attention" for t in self.layer_types)

    def layer_sliding_window(self, layer_idx: int) -> int | None:
        return self.sliding_window if self.layer_types[layer_idx] == "sliding_attention" else None


def _as_id_list(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]
