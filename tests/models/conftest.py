"""Fixtures for the gpt-oss model tests: our model and the transformers reference on the demo checkpoint."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from gpt_oss_helpers import PagedRunner

from tkr_embed.models.gpt_oss.loader import load_model
from tkr_embed.models.gpt_oss.model import GptOssForCausalLM

torch.set_num_threads(2)


def load_reference(folder: Path, dtype: torch.dtype):
    """transformers' own GptOssForCausalLM on the same folder (MXFP4 experts dequantized on CPU)."""
    from transformers import GptOssForCausalLM as ReferenceModel
    from transformers import Mxfp4Config

    model = ReferenceModel.from_pretrained(str(folder), dtype=dtype, quantization_config=Mxfp4Config(dequantize=True))
    # Some transformers releases (5.17 among them) dequantize the MXFP4 experts to bf16 whatever dtype is asked
    # for. MXFP4 values are exact in bf16, so casting to the asked dtype loses nothing.
    return model.to(dtype).eval()


@pytest.fixture(scope="session")
def reference_fp32(demo_model_dir: Path):
    return load_reference(demo_model_dir, torch.float32)


@pytest.fixture(scope="session")
def reference_bf16(demo_model_dir: Path):
    return load_reference(demo_model_dir, torch.bfloat16)


@pytest.fixture(scope="session")
def model_fp32(demo_model_dir: Path) -> GptOssForCausalLM:
    return load_model(demo_model_dir, dtype=torch.float32, verbose=False)


@pytest.fixture(scope="session")
def model_bf16(demo_model_dir: Path) -> GptOssForCausalLM:
    return load_model(demo_model_dir, dtype=torch.bfloat16, verbose=False)


@pytest.fixture
def paged_runner() -> Callable[[GptOssForCausalLM], PagedRunner]:
    return PagedRunner
