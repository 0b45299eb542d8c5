# Sourced by the bench/gpu_phase*.sh scripts on the device (carry .whl): the server's packages from the
# carried wheels, the card's name, the 64-stream shape of `tkr-embed bench`, and helpers that print
# a bench JSON (`summary FILE LABEL`), the GPU tests (`tests`), the engine bench and the graphed step
# (`bench`, `step`; PATCH="mod.NAME=VALUE" for an A/B), a step profile (`profile`; PROFILE_TOP kernels a row)
# gpt-oss-120b at some stream counts (`bench120 8 32`) and the engine bench under the step trace (`traced_bench LABEL`).
OUT=${OUT:-/tmp/tkr-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/card.txt"
SHAPE="--streams 64 --prompt-len 1024 --output-len 256 --long-prompt-len 1000 --max-num-batched-tokens ${MNBT:-8192} --warmup-streams"
tests() {
  timeout ${TESTS_S:-200} python3 -m pytest -q -m gpu -o asyncio_mode=strict -p no:cacheprovider tests/gpu > "$OUT/gpu_tests.log" 2>&1
  grep -E "passed|failed|^FAILED|^E  " "$OUT/gpu_tests.log" | head -30
}
bench() {  # the engine bench of the 20b shape; PATCH="mod.NAME=VALUE ..." changes module constants (with_patch.py)
  timeout 150 python3 bench/with_patch.py ${PATCH:-} -- -m tkr_embed.cli bench --model gpt-oss-20b --device cuda $SHAPE > "$OUT/bench.json" 2>"$OUT/bench.err"
  summary "$OUT/bench.json" "engine ${PATCH:-}"
}
step() {  # the decode step at batch 1 and 64, ms: graphed, execute, eager, graph replay alone, host time to launch; PATCH as for bench
  timeout 120 python3 bench/with_patch.py ${PATCH:-} -- bench/gpu_profile_step.py --batch 1 64 --context 1024 > "$OUT/step.json" 2>"$OUT/step.err" || tail -3 "$OUT/step.err"
  python3 -c "import json,sys; print('step', sys.argv[2], [(r['batch'], r['graphed_ms'], r['execute_ms'], r['eager_ms'], r.get('replay_ms'), r.get('logits_host_ms')) for r in json.load(open(sys.argv[1]))['rows']])" "$OUT/step.json" "${PATCH:-default}"
}
traced_bench() {  # $1: label; the engine bench under the step trace, then the trace's waves
  timeout 150 python3 bench/step_trace.py "$OUT/trace_$1.json" -- -m tkr_embed.cli bench --model gpt-oss-20b --device cuda \
    $SHAPE > "$OUT/bench_$1.json" 2>"$OUT/bench_$1.err"
  summary "$OUT/bench_$1.json" "engine $1"
  python3 bench/step_trace.py --summary "$OUT/trace_$1.json" | sed "s/^/trace $1 /"
}
summary() {  # one line per run of a bench JSON, then the engine's ms a step by phase where the JSON has it
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[2], d.get('card'), [(r['name'], round(r['seconds'],3), round(r['output_tok_s'],1), r['ttft_ms'].get('p50'), r['itl_ms'].get('p50'), r['itl_ms'].get('p99')) for r in d['runs']]); [print(sys.argv[2], r['name'], 'ms a step by phase', {k: round(v, 3) for k, v in r['step_phase_ms'].items()}) for r in d['runs'] if r.get('step_phase_ms')]" "$1" "$2" || tail -5 "${1%.json}.err"
}
bench120() {  # gpt-oss-120b (random weights) at each given stream count: the engine bench, its peak memory and KV cache
  for streams in "$@"; do
    timeout 200 python3 -m tkr_embed.cli bench --model gpt-oss-120b --device cuda --streams $streams --prompt-len 128 \
      --output-len 32 --long-prompt-len 1000 --warmup-streams > "$OUT/bench120_$streams.json" 2>"$OUT/bench120_$streams.err"
    summary "$OUT/bench120_$streams.json" "120b $streams streams"
    python3 -c "import json,sys; print({k: v for k, v in json.load(open(sys.argv[1])).items() if k in ('max_memory_allocated_gib', 'runner')})" "$OUT/bench120_$streams.json" | cut -c1-600
  done
}
profile() {
  timeout 150 python3 bench/gpu_profile_step.py --batch 1 64 --context 1024 --profile --prefill 1000 > "$OUT/profile.json" 2>"$OUT/profile.err" || tail -5 "$OUT/profile.err"
  python3 -c "
import json,sys; d=json.load(open(sys.argv[1]))
for r in d['rows']:
    print({k: v for k, v in r.items() if k != 'top_kernels'})
    for k in r.get('top_kernels', [])[:int(sys.argv[2])]: print('   ', k['ms'], k['count'], k['name'][:70])" "$OUT/profile.json" "${PROFILE_TOP:-14}"
}
