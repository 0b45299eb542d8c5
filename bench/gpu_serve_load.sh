#!/usr/bin/env bash
# The HTTP server on random 20b weights (auth, rate limits and cache off) under the offline bench's shape:
# 64 streams x (1,024 token-id prompt + 256 new, ignore_eos) on /v1/completions, after a warm-up wave;
# then batch 1, and the idle TTFT of a 1,000-token prompt. STREAMS (default 64) is the wave's width and the
# server's max_num_seqs; SWEEP="1 16 64 128 256" (each at most STREAMS) also runs a wave at each width in turn,
# as many requests as the width, all at once (load_sweep.json, a line per width). The waves' load generator runs
# LOAD_PROCESSES client processes (default 4): one process parsing 256 streams is the limit before the server is.
# The engine limits are set explicitly: run from the repository root the server would otherwise pick
# config.dev.yaml, whose max_num_seqs of 16 runs 64 streams in four waves.
# Usage: bash bench/gpu_serve_load.sh OUT_DIR   (PYTHONPATH must reach tkr_embed and the server's packages)
# SERVER_CMD replaces the server's command line (default: python3 -X faulthandler -m tkr_embed.api.server),
# e.g. "python3 bench/step_trace.py OUT/trace -- -m tkr_embed.api.server" to record its engine's steps.
set -u
OUT=$1; PORT=${PORT:-8011}; URL=http://127.0.0.1:$PORT; STREAMS=${STREAMS:-64}
GENERATION_MODEL_PATH=${MODEL_PATH:-gpt-oss-20b} GENERATION_AUTH_ENABLED=false GENERATION_RATE_LIMIT_ENABLED=false \
GENERATION_CACHE_ENABLED=false GENERATION_SECURITY__METRICS_PUBLIC=true GENERATION_DATA_DIR=/tmp/tkr-data GENERATION_LOG_LEVEL=warning GENERATION_PORT=$PORT \
GENERATION_ENGINE__MAX_NUM_BATCHED_TOKENS=${MNBT:-8192} GENERATION_ENGINE__MAX_NUM_SEQS=$STREAMS GENERATION_ENGINE__MAX_WAITING=256 GENERATION_SERVER__GRACEFUL_SHUTDOWN_S=2 \
  ${SERVER_CMD:-python3 -X faulthandler -m tkr_embed.api.server} > "$OUT/server.log" 2>&1 &
SERVER=$!; STARTED=$(date +%s.%N)
up() { python3 -c "import httpx,sys; sys.exit(httpx.get('$URL/health').status_code != 200)" 2>/dev/null; }
for _ in $(seq ${START_WAIT:-150}); do up && break; kill -0 $SERVER 2>/dev/null || break; sleep 1; done
up || { echo "server did not start"; tail -20 "$OUT/server.log"; kill $SERVER; exit 1; }
# with TRITON_CACHE_DIR set (fresh): kernels compiled by the time the server answered, and by the end; the
# server compiles its kernels before it answers, so the two counts should match
kernels() { [ -n "${TRITON_CACHE_DIR:-}" ] && echo "triton kernels compiled $1: $(find "$TRITON_CACHE_DIR" -name '*.cubin' | wc -l)"; }
echo "server answered after $(python3 -c "import time; print(round(time.time() - $STARTED, 1))") s"
kernels "before serving"
LOAD="timeout ${LOAD_TIMEOUT:-150} python3 bench/load_generator.py --url $URL --endpoint completions --prompt-tokens ${PROMPT_TOKENS:-1024} --ignore-eos"
WAVE="--processes ${LOAD_PROCESSES:-4}"
timeout 60 $LOAD --concurrency $STREAMS --requests $STREAMS --max-tokens 2 --seed 1 > "$OUT/load_warmup.json"
$LOAD --concurrency 1 --requests 1 --max-tokens ${NEW_TOKENS:-256} --seed 2 > "$OUT/load_batch1.json"
python3 bench/engine_phases.py --url $URL > "$OUT/phases_before.json"
$LOAD --concurrency $STREAMS --requests $STREAMS --max-tokens ${NEW_TOKENS:-256} --seed 3 $WAVE > "$OUT/load_64.json"
echo "server 64 engine ms a step by phase: $(python3 bench/engine_phases.py --url $URL --since "$OUT/phases_before.json")"
if [ -n "${SWEEP:-}" ]; then
  timeout ${SWEEP_TIMEOUT:-400} python3 bench/load_generator.py --url $URL --endpoint completions \
    --prompt-tokens ${PROMPT_TOKENS:-1024} --ignore-eos --concurrency $SWEEP --requests-per-stream 1 \
    --max-tokens ${NEW_TOKENS:-256} --seed 5 $WAVE > "$OUT/load_sweep.json"
  python3 -c "import json,sys
for d in json.load(open(sys.argv[1]))['sweep']:
    print('server sweep', d['concurrency'], d['succeeded'], d['errors'], round(d['wall_s'], 3), round(d['output_tok_s'], 1), d['ttft_ms'], d['itl_ms'])" "$OUT/load_sweep.json"
fi
# idle TTFT: requests one after another on one warmed client; the p50 is the figure (the first may
# load this prompt length's kernels)
timeout 60 python3 bench/load_generator.py --url $URL --endpoint completions --prompt-tokens ${TTFT_TOKENS:-1000} --concurrency 1 \
  --requests ${TTFT_REQUESTS:-10} --max-tokens 1 --seed 4 > "$OUT/load_ttft.json"
# one line a wave: succeeded, errors, output tokens, wall s, output tok/s, TTFT ms, ITL ms (percentiles)
for f in batch1 64 ttft; do
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print('server', sys.argv[2], d['succeeded'], d['errors'], d['output_tokens'], round(d['wall_s'],3), round(d['output_tok_s'],1), d['ttft_ms'], d['itl_ms'])" "$OUT/load_$f.json" $f
done
# a server that never answered: faulthandler prints every thread's stack on SIGABRT
if [ ! -s "$OUT/load_64.json" ]; then kill -ABRT $SERVER; sleep 2; grep -A12 "Thread\|Current thread" "$OUT/server.log" | head -80; fi
kernels "after the load"
kill $SERVER; wait $SERVER
grep -iE "error|traceback" "$OUT/server.log" | head -5
