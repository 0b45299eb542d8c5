"""The MoE layer at prefill sizes, eager (the prefill path reads counts on the host, so no CUDA graph):
grouped Triton kernels against experts dequantized once + grouped GEMMs. Prints one JSON object.

    python bench/gpu_moe_prefill.py --tokens 1024 2048 4096 8192 [--profile]

--profile: also the dequantize-once path's kernels by GPU time (torch.profiler), one call each.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpu_profile_step import _median_ms, _profile  # noqa: E402  (this folder: CUDA-event median, kernel list)

from tkr_embed.backends.torch.kernels.mxfp4_moe import default_config, mxfp4_moe_partials  # noqa: E402
from tkr_embed.backends.torch.kernels.mxfp4_moe_prefill import mxfp4_moe_prefill_partials  # noqa: E402
from tkr_embed.backends.torch.kernels.random_cases import make_moe_case, make_moe_weights  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    weights = make_moe_weights(seed=0)
    rows = []
    for tokens in args.tokens:
        case = make_moe_case(tokens, seed=1, weights=weights)
        grouped_cfg = default_config(tokens, 4)
        grouped = _median_ms(lambda: mxfp4_moe_partials(case.hidden, case.topk_ids, case.topk_weights, weights,
                                                        config=grouped_cfg), 10)
        prefill = _median_ms(lambda: mxfp4_moe_prefill_partials(case.hidden, case.topk_ids, case.topk_weights, weights), 10)
        rows.append({"tokens": tokens, "grouped_ms": round(grouped, 3), "prefill_ms": round(prefill, 3)})
        if args.profile:
            rows[-1].update(_profile(lambda: mxfp4_moe_prefill_partials(case.hidden, case.topk_ids, case.topk_weights,
                                                                        weights)))
        print(rows[-1], file=sys.stderr)
    print(json.dumps({"card": torch.cuda.get_device_name(0), "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
