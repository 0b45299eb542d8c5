#!/usr/bin/env bash
# Phase 4 on the device, in two parts so each fits one call:
#   PART=check bash bench/gpu_phase4.sh   # gpu tests (full log), per-layer diagnostic
#   PART=bench bash bench/gpu_phase4.sh   # tkr-embed bench + graphed-step profile, this tree and the baseline
# The baseline tree is unpacked from .f4base/base.tar (`git archive <commit> tkr_embed bench`); carry .f4base.
set -u
OUT=${OUT:-/tmp/tkr-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
NEW=$PWD; BASE=/tmp/base
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/card.txt"
export PYTHONPATH=$NEW
if [ "${PART:-check}" = check ]; then
  timeout 240 python3 -m pytest -q -m gpu -o asyncio_mode=strict -p no:cacheprovider tests/gpu -rA -s > "$OUT/gpu_tests.log" 2>&1
  grep -E "^(PASSED|FAILED|ERROR)|passed|failed|row errors|teacher-forced" "$OUT/gpu_tests.log" | tail -40
  timeout 120 python3 bench/gpu_diag_layers.py 2>&1 | grep -v '"rows"' > "$OUT/diag.log"; tail -6 "$OUT/diag.log" | cut -c1-300
  exit 0
fi
mkdir -p $BASE && tar -xf .f4base/base.tar -C $BASE
for tree in new base; do
  dir=$NEW; [ $tree = base ] && dir=$BASE
  (cd $dir && PYTHONPATH=$dir timeout 200 python3 -m tkr_embed.cli bench --model gpt-oss-20b --device cuda --streams 64 \
    --prompt-len 1024 --output-len 256 --long-prompt-len 1000 > "$OUT/bench_$tree.json" 2>"$OUT/bench_$tree.err")
  python3 -c "import json; d=json.load(open('$OUT/bench_$tree.json')); print('$tree', [(r['name'], round(r['seconds'],4), round(r['output_tok_s'],1)) for r in d['runs']])" || tail -5 "$OUT/bench_$tree.err"
done
for tree in new base; do
  dir=$NEW; [ $tree = base ] && dir=$BASE
  PYTHONPATH=$dir timeout 100 python3 bench/gpu_profile_step.py --batch 1 64 > "$OUT/profile_$tree.json" 2>/dev/null
  python3 -c "import json; d=json.load(open('$OUT/profile_$tree.json')); print('$tree', [(r['batch'], r['graphed_ms'], r['graphed_tok_s'], r['execute_ms']) for r in d['rows']])"
done
