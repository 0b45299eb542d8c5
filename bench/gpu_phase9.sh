#!/usr/bin/env bash
# Phase 9 on the device (carry .whl): the MoE's register-operand MMA kernels for 17-128 tokens (mxfp4_moe_mma).
#   PART=mma bash bench/gpu_phase9.sh     # GPU tests; the kernels at more token counts; graphed step with and without them
#   PART=engine bash bench/gpu_phase9.sh  # engine bench with and without them; the server under the same load
#   PART=final bash bench/gpu_phase9.sh   # GPU tests; 120b expert count; engine off / on; graphed step
#   PART=big bash bench/gpu_phase9.sh     # the server; gpt-oss-120b at 8 and 32 streams
#   PART=spy bash bench/gpu_phase9.sh     # the engine bench under py-spy: its host time by Python frame
set -u
source bench/gpu_setup.sh
KERNELS=tkr_embed.backends.torch.kernels
OFF="$KERNELS.mxfp4_moe.MMA_MAX_TOKENS=0"
case "${PART:-mma}" in
  mma)
    tests
    timeout 150 python3 bench/gpu_moe_mma.py --tokens ${TOKENS:-8 16 24 192 256} 2>&1 | grep -v "^{" | cut -c1-160
    step
    PATCH="$OFF" step ;;
  engine)
    bench
    PATCH="$OFF" bench
    LOAD_TIMEOUT=60 START_WAIT=90 bash bench/gpu_serve_load.sh "$OUT" ;;
  final)   # GPU tests; the kernels at 120b's expert count; engine without / with them (this order); graphed step
    tests
    timeout 120 python3 bench/gpu_moe_mma.py --tokens 16 64 --experts 128 2>&1 | grep -v "^{" | cut -c1-160
    PATCH="$OFF" bench
    bench
    step ;;
  big)   # the server under the 64-stream load; gpt-oss-120b on the 80 GB card at batch 1, 8 and 32 streams
    LOAD_TIMEOUT=60 START_WAIT=90 bash bench/gpu_serve_load.sh "$OUT"
    bench120 8 32 ;;
  spy)   # where the engine bench's host time goes with the MMA kernels on (py-spy, Python frames)
    timeout 200 /tmp/site/bin/py-spy record -r ${RATE:-200} --format raw -o "$OUT/bench_prof.txt" -- python3 -m tkr_embed.cli bench \
      --model gpt-oss-20b --device cuda $SHAPE > "$OUT/bench.json" 2>"$OUT/bench.err"
    summary "$OUT/bench.json" "engine (under py-spy)"
    python3 bench/collapsed_top.py "$OUT/bench_prof.txt" 45 | cut -c1-170 ;;
esac
