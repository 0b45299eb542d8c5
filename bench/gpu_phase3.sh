#!/usr/bin/env bash
# Phase 3 in one device call: gpu tests, MoE tile sweep, decode-step profile and the engine bench,
# each timed for this tree and for the baseline tree unpacked from .f3base/base.tar (same card, same run).
set -u
OUT=${OUT:-/tmp/tkr-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
NEW=$PWD; BASE=/tmp/base
mkdir -p $BASE && tar -xf .f3base/base.tar -C $BASE
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/card.txt"
export PYTHONPATH=$NEW
timeout 240 python3 -m pytest -q -m gpu -o asyncio_mode=strict -p no:cacheprovider tests/gpu -rs 2>&1 | tail -25 > "$OUT/gpu_tests.log"
tail -4 "$OUT/gpu_tests.log"
[ "${SWEEP:-1}" = 1 ] && (cd bench && timeout 200 python3 gpu_moe_variants.py ${SWEEP_TOKENS:-}) 2>&1 | grep -v "^{" | tee "$OUT/moe_sweep.txt"
for tree in new base; do
  dir=$NEW; [ $tree = base ] && dir=$BASE
  PYTHONPATH=$dir timeout 150 python3 bench/gpu_profile_step.py --batch 1 64 ${PROFILE:-} > "$OUT/profile_$tree.json" 2>/dev/null
  python3 -c "import json,sys; d=json.load(open('$OUT/profile_$tree.json')); print('$tree', [(r['batch'], r['graphed_ms'], r['graphed_tok_s'], r['execute_ms']) for r in d['rows']])"
done
for tree in new base; do
  dir=$NEW; [ $tree = base ] && dir=$BASE
  (cd $dir && PYTHONPATH=$dir timeout 200 python3 -m tkr_embed.cli bench --model gpt-oss-20b --device cuda --streams 64 \
    --prompt-len 1024 --output-len 256 --long-prompt-len 1000 > "$OUT/bench_$tree.json" 2>/dev/null)
  python3 -c "import json; d=json.load(open('$OUT/bench_$tree.json')); print('$tree', [(r['name'], round(r['seconds'],4), round(r['output_tok_s'],1)) for r in d['runs']])"
done
