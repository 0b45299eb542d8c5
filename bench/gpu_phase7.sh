#!/usr/bin/env bash
# Phase 7 on the device (carry .whl): matrix-vector MoE kernels with fp16 products per 32-bit word; one-launch o projection.
#   PART=gemv bash bench/gpu_phase7.sh    # GPU tests; MoE variants at 1-4 tokens; engine bench
#   PART=check bash bench/gpu_phase7.sh   # GPU tests; engine bench; step profile
#   PART=pair bash bench/gpu_phase7.sh    # engine bench; the server under the same load
#   PART=dense / kernels / final / last / next: see the cases below
set -u
source bench/gpu_setup.sh
case "${PART:-check}" in
  gemv)
    tests
    (cd bench && timeout ${SWEEP_S:-150} python3 gpu_moe_variants.py --tokens ${TOKENS:-1 2 4} > "$OUT/variants.log" 2>&1)
    grep -v '^{' "$OUT/variants.log" | grep -v Warn | sed "s/'[a-z_]*': //g" | cut -c1-150
    bench ;;
  check)
    tests; bench; profile ;;
  dense)   # the kernel tests; the few-token projections; the MoE sweep at 8-32 tokens; engine bench; profile
    timeout 150 python3 -m pytest -q -m gpu -o asyncio_mode=strict -p no:cacheprovider tests/gpu/test_gpu_kernels.py tests/gpu/test_gpu_runner.py 2>&1 | grep -E "passed|failed|^FAILED|^E  " | head
    (cd bench && timeout 100 python3 gpu_dense_gemv.py > "$OUT/dense.log" 2>&1); grep -v '^{' "$OUT/dense.log" | grep -v Warn | sed "s/'[a-z_]*': //g" | cut -c1-100
    (cd bench && timeout ${SWEEP_S:-120} python3 gpu_moe_variants.py --tokens ${TOKENS:-8 16 32} > "$OUT/variants.log" 2>&1)
    grep -v '^{' "$OUT/variants.log" | grep -v Warn | grep -v grouped | sed "s/'[a-z_]*': //g" | cut -c1-100
    bench; profile ;;
  final)   # GPU tests; engine bench; the server under the same load; step profile; 120b on an 80 GB budget
    tests; bench
    LOAD_TIMEOUT=60 START_WAIT=90 bash bench/gpu_serve_load.sh "$OUT"; rm -f "$OUT/load_warmup.json"
    profile
    timeout 150 python3 bench/gpu_fit_80gb.py -- --model gpt-oss-120b --device cuda --streams 8 --prompt-len 128 \
      --output-len 32 --long-prompt-len 1000 > "$OUT/fit120.json" 2>"$OUT/fit120.err"
    grep -E "^card|^peak" "$OUT/fit120.err"; summary "$OUT/fit120.json" 120b ;;
  last)   # GPU tests of the fused ops, kernels and runner; engine bench; the server under the same load
    timeout 120 python3 -m pytest -q -m gpu -o asyncio_mode=strict -p no:cacheprovider tests/gpu/test_gpu_fused_ops.py \
      tests/gpu/test_gpu_runner.py tests/gpu/test_gpu_kernels.py 2>&1 | grep -E "passed|failed|^FAILED|^E  " | head
    bench
    LOAD_TIMEOUT=60 START_WAIT=90 bash bench/gpu_serve_load.sh "$OUT"; rm -f "$OUT/load_warmup.json" ;;
  next)   # the next session's first call: GPU tests; MoE sweep (split-K down projection at 1-4 tokens, the
          # alignment kernel at 64); the alignment kernel off/on through the engine; the server with its
          # step phases (compare with the engine's step_phase_ms)
    tests
    (cd bench && timeout 150 python3 gpu_moe_variants.py --tokens 1 4 64 > "$OUT/variants.log" 2>&1)
    grep -v '^{' "$OUT/variants.log" | grep -v Warn | sed "s/'[a-z_]*': //g" | cut -c1-130
    bench; mv "$OUT/bench.json" "$OUT/bench_align_off.json"
    timeout 150 python3 bench/with_patch.py tkr_embed.backends.torch.kernels.moe_align.ALIGN_KERNEL_ON_CUDA=True -- \
      -m tkr_embed.cli bench --model gpt-oss-20b --device cuda $SHAPE > "$OUT/bench.json" 2>"$OUT/bench.err"
    summary "$OUT/bench_align_off.json" "engine align=torch"; summary "$OUT/bench.json" "engine align=kernel"
    LOAD_TIMEOUT=60 START_WAIT=90 bash bench/gpu_serve_load.sh "$OUT"; rm -f "$OUT/load_warmup.json" ;;
  kernels)   # the kernel tests, the MoE sweep at a few tokens, the engine bench and the step profile
    timeout 120 python3 -m pytest -q -m gpu -o asyncio_mode=strict -p no:cacheprovider tests/gpu/test_gpu_kernels.py 2>&1 | grep -E "passed|failed|^FAILED|^E  " | head
    (cd bench && timeout ${SWEEP_S:-150} python3 gpu_moe_variants.py --tokens ${TOKENS:-1 4 8} > "$OUT/variants.log" 2>&1)
    grep -v '^{' "$OUT/variants.log" | grep -v Warn | grep -v decode | sed "s/'[a-z_]*': //g" | cut -c1-110
    bench; profile ;;
  pair)
    bench
    LOAD_TIMEOUT=60 START_WAIT=90 bash bench/gpu_serve_load.sh "$OUT"
    rm -f "$OUT/load_warmup.json" ;;
esac
