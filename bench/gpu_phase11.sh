#!/usr/bin/env bash
# Phase 11 on the device (carry .whl): where the 64-stream run's time goes, step by step (bench/step_trace.py).
#   PART=trace bash bench/gpu_phase11.sh   # engine at 8,192 and 32,768-token steps, then the server, each traced
#   PART=server bash bench/gpu_phase11.sh  # the server alone, traced (with the client's start: where a wave waits)
#   PART=procs bash bench/gpu_phase11.sh   # the engine, then the server with its engine in a child process / a thread
set -u
source bench/gpu_setup.sh
traced_server() {
  SERVER_CMD="python3 bench/step_trace.py $OUT/trace_server.json -- -m tkr_embed.api.server" TTFT_REQUESTS=${TTFT_REQUESTS:-10} \
    LOAD_TIMEOUT=60 START_WAIT=90 bash bench/gpu_serve_load.sh "$OUT" 2>&1 | grep -E "^server|error|Error"
  python3 bench/step_trace.py --summary "$OUT/trace_server.json" "$OUT"/load_*.json | sed "s/^/trace server /"
}
case "${PART:-trace}" in
  trace)
    traced_bench 8192
    SHAPE="${SHAPE/8192/32768}" traced_bench 32768
    traced_server ;;
  server)
    traced_server ;;
  procs)   # the offline engine, then the server with its engine in a child process (default) and in a thread
    [ -n "${NO_BENCH:-}" ] || bench
    for separate in ${SEPARATE:-true false}; do
      GENERATION_ENGINE__SEPARATE_PROCESS=$separate TTFT_REQUESTS=10 LOAD_TIMEOUT=60 START_WAIT=120 \
        bash bench/gpu_serve_load.sh "$OUT" 2>&1 | grep -E "^server|rror" | sed "s/^/separate_process=$separate: /"
      grep -ciE "compil|warn" "$OUT/server.log" | sed "s/^/separate_process=$separate: server.log lines with compil|warn: /"
    done ;;
esac
