#!/usr/bin/env bash
# Phase 8 on the device (carry .whl): programmatic dependent launch for the decode step's Triton kernels; lookahead
# decode steps; the GIL switch interval of the server;
# the one-program expert alignment on by default at 33-64 tokens.
#   PART=pdl bash bench/gpu_phase8.sh    # GPU tests; graphed step with PDL on / off / + q/k/v on dense_gemv; engine on / off
#   PART=gil bash bench/gpu_phase8.sh    # graphed step; engine; the server with GIL switch intervals of 5, 0.5 and 0.1 ms
#   PART=final bash bench/gpu_phase8.sh  # GPU tests; grouped MoE tiles at 48/64 tokens; engine at 8,192 and 16,384 tokens a step; server
#   PART=ref bash bench/gpu_phase8.sh    # the server twice; HF transformers generate; 120b within 80 GB; step profile
#   PART=ahead bash bench/gpu_phase8.sh  # GPU tests; engine with lookahead on / off; the server at GIL intervals 0.1 and 0.02 ms
#   PART=last bash bench/gpu_phase8.sh   # the final tree: GPU tests; graphed step; engine; MoE prefill paths; the server
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
  final)
    tests
    (cd bench && timeout 120 python3 gpu_moe_variants.py --tokens 48 64 > "$OUT/variants.log" 2>&1)
    grep -v '^{' "$OUT/variants.log" | grep -v Warn | grep -E "default|grouped" | sed "s/'[a-z_]*': //g" | cut -c1-110
    bench; cp "$OUT/bench.json" "$OUT/bench_8192.json"
    MNBT=16384; SHAPE="${SHAPE/--max-num-batched-tokens 8192/--max-num-batched-tokens 16384}"; bench; mv "$OUT/bench.json" "$OUT/bench_16384.json"
    MNBT=8192 LOAD_TIMEOUT=60 START_WAIT=90 bash bench/gpu_serve_load.sh "$OUT"; rm -f "$OUT/load_warmup.json" ;;
  ref)
    for run in 1 2; do   # the server twice with the default GIL switch interval: how much it varies
      LOAD_TIMEOUT=60 START_WAIT=90 bash bench/gpu_serve_load.sh "$OUT" | grep -E "server (64|ttft)"
    done
    rm -f "$OUT/load_warmup.json"
    timeout 150 python3 bench/gpu_hf_generate.py --batch 1 --prompt 128 --new 64 > "$OUT/hf_generate.json" 2>"$OUT/hf.err" || tail -3 "$OUT/hf.err"
    tail -c 400 "$OUT/hf_generate.json"; echo
    timeout 150 python3 bench/gpu_fit_80gb.py -- --model gpt-oss-120b --device cuda --streams 8 --prompt-len 128 \
      --output-len 32 --long-prompt-len 1000 > "$OUT/fit120.json" 2>"$OUT/fit120.err"
    grep -E "^card|^peak" "$OUT/fit120.err"; summary "$OUT/fit120.json" 120b
    PROFILE_TOP=${PROFILE_TOP:-16} profile ;;
  ahead)
    tests
    bench; cp "$OUT/bench.json" "$OUT/bench_lookahead.json"
    SHAPE="$SHAPE --no-lookahead" bench
    for ms in ${INTERVALS:-0.1 0.02}; do
      echo "== server, GIL switch interval $ms ms"
      GENERATION_ENGINE__GIL_SWITCH_INTERVAL_MS=$ms LOAD_TIMEOUT=60 START_WAIT=90 bash bench/gpu_serve_load.sh "$OUT"
    done
    rm -f "$OUT/load_warmup.json" ;;
  last)
    tests; step; bench
    timeout 120 python3 bench/gpu_moe_prefill.py > "$OUT/moe_prefill.json" 2>"$OUT/moe_prefill.err"; grep "{'tokens" "$OUT/moe_prefill.err" || tail -3 "$OUT/moe_prefill.err"
    LOAD_TIMEOUT=60 START_WAIT=90 bash bench/gpu_serve_load.sh "$OUT"; rm -f "$OUT/load_warmup.json" ;;
  pair)
    bench
    LOAD_TIMEOUT=60 START_WAIT=90 bash bench/gpu_serve_load.sh "$OUT"; rm -f "$OUT/load_warmup.json" ;;
esac
