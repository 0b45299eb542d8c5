#!/usr/bin/env bash
# Phase 8 on the device (carry .whl): programmatic dependent launch for the decode step's Triton kernels;
# the one-program expert alignment on by default at 33-64 tokens.
#   PART=pdl bash bench/gpu_phase8.sh    # GPU tests; graphed step with PDL on / off / + q/k/v on dense_gemv; engine on / off
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
  pair)
    bench
    LOAD_TIMEOUT=60 START_WAIT=90 bash bench/gpu_serve_load.sh "$OUT"; rm -f "$OUT/load_warmup.json" ;;
esac
