#!/usr/bin/env bash
# Phase 6 on the device (carry .whl): MoE kernels with PTX dequantization and per-pair partials.
#   PART=check bash bench/gpu_phase6.sh   # kernel tests; engine bench; step profile; MoE variant sweep
#   PART=full  bash bench/gpu_phase6.sh   # engine bench; the HTTP server under the same load; HF transformers generate
#   PART=serve bash bench/gpu_phase6.sh   # async engine without HTTP (ids / harmony text); the server as is, profiled;
#                                         # the server with a 0.2 ms GIL switch interval
#   PART=engine-thread bash bench/gpu_phase6.sh   # offline bench; async engine (ids); the server
#   PART=pair bash bench/gpu_phase6.sh            # offline bench; the server
set -u
PROFILE_TOP=10
source bench/gpu_setup.sh
if [ "${PART:-check}" = pair ]; then   # offline bench, then the server under the same load, one call
  timeout 120 python3 -m tkr_embed.cli bench --model gpt-oss-20b --device cuda $SHAPE > "$OUT/bench.json" 2>"$OUT/bench.err"
  summary "$OUT/bench.json" engine
  LOAD_TIMEOUT=60 START_WAIT=90 bash bench/gpu_serve_load.sh "$OUT"
  rm -f "$OUT/load_warmup.json"
  exit 0
fi
if [ "${PART:-check}" = engine-thread ]; then   # offline bench, async engine, server: the step loop in its own thread
  timeout 150 python3 -m tkr_embed.cli bench --model gpt-oss-20b --device cuda $SHAPE > "$OUT/bench.json" 2>"$OUT/bench.err"
  summary "$OUT/bench.json" engine
  timeout 100 python3 bench/gpu_async_engine.py --tokenizers ids > "$OUT/async_engine.json" 2>"$OUT/async_engine.err" || tail -5 "$OUT/async_engine.err"
  grep '^{"tokenizer' "$OUT/async_engine.json" | cut -c1-400
  bash bench/gpu_serve_load.sh "$OUT"
  rm -f "$OUT/load_warmup.json"
  exit 0
fi
if [ "${PART:-check}" = serve ]; then
  timeout 150 python3 bench/gpu_async_engine.py > "$OUT/async_engine.json" 2>"$OUT/async_engine.err" || tail -5 "$OUT/async_engine.err"
  grep '^{"tokenizer' "$OUT/async_engine.json" | cut -c1-400
  PROFILE=10 bash bench/gpu_serve_load.sh "$OUT"
  mv "$OUT/load_64.json" "$OUT/load_64_default.json"
  GENERATION_ENGINE__GIL_SWITCH_INTERVAL_MS=0.2 bash bench/gpu_serve_load.sh "$OUT"
  rm -f "$OUT/load_warmup.json" "$OUT/server_prof.txt"
  exit 0
fi
if [ "${PART:-check}" = check ]; then
  timeout 240 python3 -m pytest -q -m gpu -o asyncio_mode=strict -p no:cacheprovider tests/gpu > "$OUT/gpu_tests.log" 2>&1
  grep -E "passed|failed|^FAILED|^E  " "$OUT/gpu_tests.log" | head -30
  timeout 200 python3 -m tkr_embed.cli bench --model gpt-oss-20b --device cuda $SHAPE > "$OUT/bench.json" 2>"$OUT/bench.err"
  summary "$OUT/bench.json" engine
  profile
  (cd bench && timeout ${SWEEP_S:-150} python3 gpu_moe_variants.py --tokens ${TOKENS:-1 8 64 1000} > "$OUT/variants.log" 2>&1)
  grep -v '^{' "$OUT/variants.log" | grep -v Warn | sed "s/'[a-z_]*': //g" | cut -c1-150
  exit 0
fi
timeout 200 python3 -m tkr_embed.cli bench --model gpt-oss-20b --device cuda $SHAPE > "$OUT/bench.json" 2>"$OUT/bench.err"
summary "$OUT/bench.json" engine
bash bench/gpu_serve_load.sh "$OUT"
rm -f "$OUT/load_warmup.json"
timeout 150 python3 bench/gpu_hf_generate.py --batch 1 --prompt 128 --new 64 > "$OUT/hf_generate.json" 2>"$OUT/hf.err" || tail -3 "$OUT/hf.err"
tail -c 600 "$OUT/hf_generate.json"
