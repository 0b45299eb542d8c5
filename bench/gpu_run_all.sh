#!/usr/bin/env bash
# Everything the GPU section of BENCHMARKS.md reports, in one run on the GPU machine (repository root).
# Writes JSON/logs to ${OUT:-/tmp/tkr-out}. pytest-asyncio is absent there: asyncio_mode is overridden.
set -u
OUT=${OUT:-/tmp/tkr-out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/card.txt"
python3 -m pytest -q -m gpu -o asyncio_mode=strict -p no:cacheprovider tests/gpu -rs -s 2>&1 | tail -40 | tee "$OUT/gpu_tests.log"
python3 -m tkr_embed.cli bench --model gpt-oss-20b --device cuda --streams 64 --prompt-len 1024 \
  --output-len 256 --long-prompt-len 1000 2>&1 | tee "$OUT/bench_20b.json"
python3 bench/gpu_hf_generate.py --batch 1 --prompt 128 --new 64 2>&1 | tail -30 | tee "$OUT/hf_generate.json"
python3 -m tkr_embed.cli bench --model gpt-oss-120b --device cuda --streams 8 --prompt-len 128 \
  --output-len 32 --long-prompt-len 1000 2>&1 | tee "$OUT/bench_120b.json"
