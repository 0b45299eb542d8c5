#!/usr/bin/env bash
# Phase 5 on the device (carry .whl: the server's wheels, see BENCHMARKS.md):
#   PART=server bash bench/gpu_phase5.sh  # MoE tile sweep; offline engine bench; the HTTP server + load generator, same shape
#   PART=tiles  bash bench/gpu_phase5.sh  # MoE kernel checks; offline bench of .f5base/base.tar (the tile rule before) and of
#                                         # this tree; then the server + load generator on this tree
#   PART=diag   bash bench/gpu_phase5.sh  # the async engine without HTTP (bench/gpu_async_engine.py); the server under py-spy
#   PART=procs  bash bench/gpu_phase5.sh  # offline bench, then the server loaded by 1 and by $PROCESSES (8) client processes
set -u
OUT=${OUT:-/tmp/tkr-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
NEW=$PWD
export PYTHONPATH=/tmp/site:$NEW
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/card.txt"
SHAPE="--streams 64 --prompt-len 1024 --output-len 256 --long-prompt-len 1000 --max-num-batched-tokens ${MNBT:-8192} --warmup-streams"
summary() {  # one line per run of a bench JSON
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[2], d.get('card'), [(r['name'], round(r['seconds'],3), round(r['output_tok_s'],1), r['ttft_ms'].get('p50'), r['itl_ms'].get('p50'), r['itl_ms'].get('p99')) for r in d['runs']])" "$1" "$2" || tail -5 "${1%.json}.err"
}
if [ "${PART:-server}" = tiles ]; then
  timeout 90 python3 -m pytest -q -m gpu -o asyncio_mode=strict -p no:cacheprovider tests/gpu/test_gpu_kernels.py -k mxfp4_moe 2>&1 | tail -3
  mkdir -p /tmp/base && tar -xf .f5base/base.tar -C /tmp/base
  for tree in base new; do
    dir=$NEW; [ $tree = base ] && dir=/tmp/base
    (cd $dir && PYTHONPATH=/tmp/site:$dir timeout 150 python3 -m tkr_embed.cli bench --model gpt-oss-20b --device cuda $SHAPE \
      > "$OUT/bench_$tree.json" 2>"$OUT/bench_$tree.err")
    summary "$OUT/bench_$tree.json" $tree
  done
  bash bench/gpu_serve_load.sh "$OUT"
  exit 0
fi
if [ "${PART:-server}" = procs ]; then   # offline engine, then the server loaded by one and by several client processes
  timeout 180 python3 -m tkr_embed.cli bench --model gpt-oss-20b --device cuda $SHAPE > "$OUT/bench_offline.json" 2>"$OUT/bench_offline.err"
  summary "$OUT/bench_offline.json" offline
  PROCESSES=${PROCESSES:-8} bash bench/gpu_serve_load.sh "$OUT"
  rm -f "$OUT/load_warmup.json"
  exit 0
fi
if [ "${PART:-server}" = diag ]; then   # where the server's time goes: the async engine alone, then a profiled server
  timeout 200 python3 bench/gpu_async_engine.py > "$OUT/async_engine.json" 2>"$OUT/async_engine.err" || tail -5 "$OUT/async_engine.err"
  head -2 "$OUT/async_engine.json"
  PROFILE=${PROFILE:-12} bash bench/gpu_serve_load.sh "$OUT"
  rm -f "$OUT/load_warmup.json" "$OUT/async_engine.err"
  exit 0
fi
(cd bench && timeout 120 python3 gpu_moe_variants.py --tokens 256 1024 > "$OUT/sweep.log" 2>&1); grep -v '^\[' "$OUT/sweep.log" | tail -40
timeout 180 python3 -m tkr_embed.cli bench --model gpt-oss-20b --device cuda $SHAPE > "$OUT/bench_offline.json" 2>"$OUT/bench_offline.err"
summary "$OUT/bench_offline.json" offline
bash bench/gpu_serve_load.sh "$OUT"
