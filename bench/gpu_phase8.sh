#!/usr/bin/env bash
# Phase 8 on the device (carry .whl): programmatic dependent launch for the decode step's Triton kernels;
# the one-program expert alignment on by default at 33-64 tokens.
#   PART=pdl bash bench/gpu_phase8.sh    # GPU tests; graphed step with PDL on / off / + q/k/v on dense_gemv; engine on / off
#   PART=gil bash bench/gpu_phase8.sh    # graphed step; engine; the server with GIL switch intervals of 5, 0.5 and 0.1 ms
#   PART=pair bash bench/gpu_phase8.sh   # engine bench; the server under the same load
set -u
source bench/gpu_setup.sh
KERNELS=tkr_embed.backends.torch.kernels
case "${PART:-pdl}" in
  pdl)
    tests
    step
    PATCH="$KERNELS.pdl.PDL_ON_CUDA=False" step
    PATCH="$KERNELS.dense_gemv.WIDE_ON_GEMV=True" step
    bench
    PATCH="$KERNELS.pdl.PDL_ON_CUDA=False" bench ;;
  gil)
    step; bench
    for ms in ${INTERVALS:-5 0.5 0.1}; do
      echo "== server, GIL switch interval $ms ms"
      GENERATION_ENGINE__GIL_SWITCH_INTERVAL_MS=$ms LOAD_TIMEOUT=60 START_WAIT=90 bash bench/gpu_serve_load.sh "$OUT"
      for f in batch1 64 ttft; do mv "$OUT/load_$f.json" "$OUT/load_${f}_gil$ms.json"; done
    done
    rm -f "$OUT/load_warmup.json" ;;
  pair)
    bench
    LOAD_TIMEOUT=60 START_WAIT=90 bash bench/gpu_serve_load.sh "$OUT"; rm -f "$OUT/load_warmup.json" ;;
esac
