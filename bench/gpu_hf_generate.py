"""Hugging Face transformers' own GptOss `generate` on the 20b shape (random bf16 weights on the GPU).

    python bench/gpu_hf_generate.py --batch 1 8 --prompt 128 --new 64

The obvious thing a Python user would try; prints one JSON object with decode tokens/s.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
import transformers
from transformers import GptOssConfig, GptOssForCausalLM


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--attn", default="eager")
    args = parser.parse_args()
    config = GptOssConfig(
        num_hidden_layers=24,
        num_local_experts=32,
        num_experts_per_tok=4,
        vocab_size=201088,
        hidden_size=2880,
        intermediate_size=2880,
        num_attention_heads=64,
        num_key_value_heads=8,
        head_dim=64,
        sliding_window=128,
        layer_types=["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(24)],
        eos_token_id=None,
        pad_token_id=0,
    )
    config._attn_implementation = args.attn
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = GptOssForCausalLM(config)
    model.eval()
    rows = []
    for batch in args.batch:
        prompt = torch.randint(0, config.vocab_size, (batch, args.prompt), device="cuda")
        kwargs = dict(do_sample=False, pad_token_id=0, eos_token_id=None)
        with torch.no_grad():
            model.generate(prompt, max_new_tokens=4, min_new_tokens=4, **kwargs)  # warm-up
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            model.generate(prompt, max_new_tokens=1, min_new_tokens=1, **kwargs)
            torch.cuda.synchronize()
            t1 = time.perf_counter()
            out = model.generate(prompt, max_new_tokens=args.new, min_new_tokens=args.new, **kwargs)
            torch.cuda.synchronize()
            t2 = time.perf_counter()
        new_tokens = out.shape[1] - args.prompt
        decode_s = (t2 - t1) - (t1 - t0)
        rows.append(
            {
                "batch": batch,
                "prompt": args.prompt,
                "new_tokens": new_tokens,
                "total_s": t2 - t1,
                "prefill_s": t1 - t0,
                "decode_tok_s": batch * (new_tokens - 1) / decode_s,
                "overall_tok_s": batch * new_tokens / (t2 - t1),
            }
        )
    print(
        json.dumps(
            {
                "device": torch.cuda.get_device_name(0),
                "transformers": transformers.__version__,
                "attn": args.attn,
                "rows": rows,
                "memory_GiB": torch.cuda.max_memory_allocated() / 2**30,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
