#!/usr/bin/env bash
# Phase 10 on the device (carry .whl): the experts' MXFP4 bytes in 16-row tiles (kernels/expert_layout.py).
#   PART=tiles bash bench/gpu_phase10.sh   # tiled-layout GPU tests; engine (16,384-token steps) tiles off / on; 8,192 on
#   PART=final bash bench/gpu_phase10.sh   # every GPU test; engine at 8,192 (default) to 65,536-token steps
#   MNBT=32768 PART=server bash bench/gpu_phase10.sh  # the server under the 64-stream load; 120b at 8 and 32 streams
#   PART=steps bash bench/gpu_phase10.sh   # kernel and runner GPU tests; engine at 16,384 and 32,768-token steps; graphed step
#   PART=gc bash bench/gpu_phase10.sh      # engine and server (8,192-token steps) with and without gc.freeze after loading
set -u
source bench/gpu_setup.sh
NOTILE="tkr_embed.backends.torch.kernels.expert_layout.ENABLED=False"
BIG="${SHAPE/8192/16384}"
case "${PART:-tiles}" in
  tiles)
    timeout 240 python3 -m pytest -q -m gpu -o asyncio_mode=strict -p no:cacheprovider tests/gpu/test_gpu_runner.py \
      "tests/gpu/test_gpu_kernels.py::test_every_dispatch_path_reads_tiled_experts_bit_for_bit" > "$OUT/gpu_tests.log" 2>&1
    grep -E "passed|failed|^FAILED|^E  " "$OUT/gpu_tests.log" | head -30
    SHAPE="$BIG" PATCH="$NOTILE" bench
    SHAPE="$BIG" bench
    bench ;;
  final)   # every GPU test; the engine at 8,192 (the default), 16,384, 32,768 and 65,536-token steps
    TESTS_S=300 tests
    for tokens in 8192 16384 32768 65536; do SHAPE="${SHAPE/8192/$tokens}" bench; done ;;
  steps)
    timeout 240 python3 -m pytest -q -m gpu -o asyncio_mode=strict -p no:cacheprovider tests/gpu/test_gpu_runner.py \
      tests/gpu/test_gpu_kernels.py > "$OUT/gpu_tests.log" 2>&1
    grep -E "passed|failed|^FAILED|^E  " "$OUT/gpu_tests.log" | head -30
    SHAPE="$BIG" bench
    SHAPE="${SHAPE/8192/32768}" bench
    step ;;
  gc)
    NOFREEZE="tkr_embed.engine.gc_pauses.FREEZE_AFTER_LOAD=False"
    bench
    PATCH="$NOFREEZE" bench
    TTFT_REQUESTS=20 LOAD_TIMEOUT=60 START_WAIT=90 bash bench/gpu_serve_load.sh "$OUT" 2>&1 | grep "^server"
    SERVER_CMD="python3 -X faulthandler bench/with_patch.py $NOFREEZE -- -m tkr_embed.api.server" TTFT_REQUESTS=20 \
      LOAD_TIMEOUT=60 START_WAIT=90 bash bench/gpu_serve_load.sh "$OUT" 2>&1 | grep "^server" | sed "s/^/no freeze: /" ;;
  server)
    LOAD_TIMEOUT=60 START_WAIT=90 bash bench/gpu_serve_load.sh "$OUT"
    bench120 8 32 ;;
esac
