#!/usr/bin/env bash
# The demo server on the CPU at each torch thread count (engine.cpu_threads; "auto" leaves it to the engine):
# one stream, then 8 at once, 64 new tokens each (ignore_eos), through bench/load_generator.py.
# Usage: [TEMPERATURE=1.0] bash bench/cpu_threads.sh [THREADS...]   (default: auto 1 2; greedy); prints one line a
# count and wave.
set -u
PY=${PY:-.venv/bin/python}; PORT=${PORT:-8019}; URL=http://127.0.0.1:$PORT
DATA=$(mktemp -d); trap 'rm -rf "$DATA"' EXIT
for threads in "${@:-auto 1 2}"; do
  for t in $threads; do
    setting=$([ "$t" = auto ] || echo "GENERATION_ENGINE__CPU_THREADS=$t")
    env $setting GENERATION_ENV=development GENERATION_DATA_DIR="$DATA" GENERATION_PORT=$PORT GENERATION_LOG_LEVEL=info \
      GENERATION_ENGINE__MAX_NUM_SEQS=8 "$PY" -m tkr_embed.api.server > "$DATA/server.log" 2>&1 &
    server=$!
    for _ in $(seq 120); do curl -sf "$URL/health" >/dev/null && break; sleep 1; done
    used=$(grep -o 'torch CPU threads: [0-9]*' "$DATA/server.log" | grep -o '[0-9]*$')
    for streams in 1 8; do
      "$PY" bench/load_generator.py --url "$URL" --model demo-model --endpoint completions --prompt-tokens 64 \
        --temperature "${TEMPERATURE:-0}" \
        --ignore-eos --concurrency $streams --requests $((streams * 2)) --max-tokens 64 --seed 1 > "$DATA/load.json"
      "$PY" -c "import json,sys; d=json.load(open(sys.argv[1])); print(f'threads {sys.argv[2]} ({sys.argv[3]}) streams {sys.argv[4]}: {d[\"output_tok_s\"]:.1f} output tok/s, ITL p50 {d[\"itl_ms\"][\"p50\"]:.1f} p99 {d[\"itl_ms\"][\"p99\"]:.1f} ms, TTFT p50 {d[\"ttft_ms\"][\"p50\"]:.0f} ms, errors {len(d[\"errors\"])}')" \
        "$DATA/load.json" "$t" "$used" $streams
    done
    kill $server; wait $server 2>/dev/null
  done
done
