"""The trained demo model: the shipped weights (`demo_weights.safetensors`) and their expansion to the Hub layout.

The model was trained by `scripts/train_demo_model.py` on a reduced vocabulary: the token ids its corpus
uses plus one "other" row standing for every unused id. The shipped file holds those ids (`vocab_ids`), their
embedding and unembedding rows (the "other" row last), every other tensor under its Hub name, and the experts
already as MXFP4 blocks and scales (they were trained quantisation-aware, so these are the trained values).

Expanding gives every unused id the "other" row, in the embedding and in `lm_head`. Training added
log(number of unused ids) to the "other" logit, so its softmax is the full 201,088-way softmax of the expanded
model: unused ids keep almost no probability, and an unknown prompt token reads as "other".
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tkr_embed.models.gpt_oss.checkpoint import SINGLE_FILE
from tkr_embed.models.gpt_oss.config import GptOssConfig
from tkr_embed.models.gpt_oss.demo import DEMO_ROPE_SCALING

WEIGHTS_FILE = "demo_weights.safetensors"
DIGEST_FILE = "demo_weights.sha256"  # in a written checkpoint: which shipped weights it was expanded from
VOCAB_IDS = "vocab_ids"
EXPANDED = ("model.embed_tokens.weight", "lm_head.weight")  # [len(vocab_ids) + 1, hidden]: the used rows, then "other"

TRAINED_CONFIG = GptOssConfig(
    vocab_size=201088,
    hidden_size=128,
    num_hidden_layers=4,
    num_attention_heads=8,
    num_key_value_heads=4,
    head_dim=32,
    num_local_experts=8,
    num_experts_per_tok=4,
    intermediate_size=128,
    sliding_window=32,
    rope_theta=150000.0,
    rope_scaling=dict(DEMO_ROPE_SCALING),
    max_position_embeddings=4096,
)


def shipped_weights() -> Path:
    """The packaged weights file (in the source tree for an editable install, in site-packages for a wheel)."""
    return Path(str(resources.files("tkr_embed.models.gpt_oss") / WEIGHTS_FILE))


def weights_digest(weights: Path | None = None) -> str:
    """SHA-256 of the shipped weights: a checkpoint written from other weights is written again."""
    return hashlib.sha256((weights or shipped_weights()).read_bytes()).hexdigest()


def is_current(folder: Path) -> bool:
    """Whether `folder` holds the checkpoint of the shipped weights."""
    marker = Path(folder) / DIGEST_FILE
    return (
        (Path(folder) / SINGLE_FILE).is_file() and marker.is_file() and marker.read_text().strip() == weights_digest()
    )


def expand_rows(rows: torch.Tensor, vocab_ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """[U + 1, H] used rows then "other" -> [vocab_size, H]: each used id its row, every other id the last row."""
    full = rows[-1:].expand(vocab_size, rows.shape[1]).clone()  # [V, H]
    full[vocab_ids.long()] = rows[:-1]
    return full


def write_trained_checkpoint(out_dir: Path, weights: Path | None = None) -> Path:
    """Write config.json, generation_config.json and model.safetensors of the trained demo model."""
    from tkr_embed.models.gpt_oss.demo import GENERATION_CONFIG

    weights = weights or shipped_weights()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = TRAINED_CONFIG
    tensors: dict[str, torch.Tensor] = {}
    with safe_open(str(weights), framework="pt") as shipped:
        vocab_ids = shipped.get_tensor(VOCAB_IDS)
        for name in shipped.keys():  # noqa: SIM118 (safe_open is no mapping)
            if name == VOCAB_IDS:
                continue
            tensor = shipped.get_tensor(name)
            tensors[name] = expand_rows(tensor, vocab_ids, config.vocab_size) if name in EXPANDED else tensor
    (out_dir / "config.json").write_text(json.dumps(config.to_hf_dict(), indent=2) + "\n")
    (out_dir / "generation_config.json").write_text(json.dumps(GENERATION_CONFIG, indent=2) + "\n")
    save_file(tensors, str(out_dir / SINGLE_FILE), metadata={"format": "pt"})
    (out_dir / DIGEST_FILE).write_text(weights_digest(weights) + "\n")
    return out_dir
