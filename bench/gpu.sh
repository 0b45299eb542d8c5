#!/usr/bin/env bash
# The GPU figures of BENCHMARKS.md, on the GPU machine from the repository root, with .whl/ (the server's
# packages as wheels) carried; torch, triton, transformers and numpy are the machine's own.
#   PART=tests|engine|sweep|long|server|peers|llamacpp|hf|120b|all bash bench/gpu.sh   (default: all, in that order)
# JSON and logs go to $OUT (default /tmp/tkr-out); each part prints its summary lines. TEMPERATURE=1.0 samples the
# sweep's decode runs instead of taking the greedy token; REPETITION=1.1, PRESENCE=0.5, FREQUENCY=0.3 penalise them.
set -u
OUT=${OUT:-/tmp/tkr-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/card.txt"

summary() {  # FILE LABEL: one line a run of a `tkr-embed bench` JSON
  python3 - "$1" "$2" <<'EOF' || tail -5 "${1%.json}.err"
import json, sys
report, label = json.load(open(sys.argv[1])), sys.argv[2]
runner = report["runner"]
print(label, report.get("card"), "step tokens", report["max_num_batched_tokens"],
      "idle", report["max_num_batched_tokens_idle"], "max_num_seqs", report.get("max_num_seqs"),
      "KV GiB", runner.get("kv_cache_gib"), "peak GiB", report.get("max_memory_allocated_gib"))
sizes = runner.get("cuda_graph_batch_sizes") or []
print(label, "ready after", report.get("ready_s"), "s;", len(sizes), "decode graphs up to", max(sizes, default=None),
      "captured in", runner.get("cuda_graph_capture_s"), "s, holding", runner.get("cuda_graph_gib"), "GiB of",
      runner.get("cuda_graph_budget_gib"), "GiB set aside")
ms = lambda value: None if value is None else round(value, 3)
for run in report["runs"]:
    print(label, run["name"], run["streams"], f"{run['output_tok_s']:.1f} tok/s", "TTFT p50/p99",
          ms(run["ttft_ms"]["p50"]), ms(run["ttft_ms"]["p99"]), "ms", "ITL p50/p99", ms(run["itl_ms"]["p50"]),
          ms(run["itl_ms"]["p99"]), "ms", "wall", round(run["seconds"], 2), "s")
EOF
}

tests() {  # the GPU test suite (pytest-asyncio is absent on the machine: asyncio_mode is overridden)
  timeout 300 python3 -m pytest -q -m gpu -o asyncio_mode=strict -p no:cacheprovider tests/gpu \
    > "$OUT/gpu_tests.log" 2>&1
  grep -E "passed|failed|^FAILED|^E  " "$OUT/gpu_tests.log" | head -30
}

engine() {  # the offline engine, 20b shape: batch 1, 64 streams x (1,024 + 256), TTFT of a 1,000-token prompt
  timeout 200 python3 -m tkr_embed.cli bench --model gpt-oss-20b --device cuda --streams 64 --prompt-len 1024 \
    --output-len 256 --long-prompt-len 1000 --warmup-streams > "$OUT/engine.json" 2> "$OUT/engine.err"
  summary "$OUT/engine.json" engine
}

sweep() {  # the offline engine at each width in turn on one engine (max_num_seqs the widest), 1,024 + 256 a stream
  timeout ${SWEEP_TIMEOUT:-300} python3 -m tkr_embed.cli bench --model gpt-oss-20b --device cuda \
    --streams ${WIDTHS:-1 16 64 128 256} --prompt-len 1024 --output-len 256 --long-prompt-len 1000 --warmup-streams \
    --temperature "${TEMPERATURE:-0}" --repetition-penalty "${REPETITION:-1}" --presence-penalty "${PRESENCE:-0}" \
    --frequency-penalty "${FREQUENCY:-0}" > "$OUT/sweep.json" 2> "$OUT/sweep.err"
  summary "$OUT/sweep.json" sweep
}

long_outputs() {  # TensorRT-LLM's published shape, 1,024 + 1,024 a stream, on the offline engine (LONG_WIDTHS: 256)
  timeout ${LONG_TIMEOUT:-300} python3 -m tkr_embed.cli bench --model gpt-oss-20b --device cuda \
    --streams ${LONG_WIDTHS:-256} --prompt-len 1024 --output-len 1024 > "$OUT/long.json" 2> "$OUT/long.err"
  summary "$OUT/long.json" long
}

server() {  # the HTTP server under the load generator, the same shape
  bash bench/gpu_serve_load.sh "$OUT"
}

llamacpp() {  # llama.cpp's llama-bench and llama-batched-bench at our sweep's widths (carry .peers: bench/README.md)
  bash bench/gpu_peers_llamacpp.sh "$OUT"
}

hf() {  # transformers' generate, 20b shape, bf16; a process a batch size: one out of memory spares the rest
  for batch in ${HF_BATCHES:-1 64}; do
    timeout 300 python3 bench/gpu_hf_generate.py --batch $batch --prompt 1024 --new 256 \
      > "$OUT/hf_$batch.json" 2> "$OUT/hf_$batch.err" || { tail -2 "$OUT/hf_$batch.err"; continue; }
    python3 -c "import json,sys; d=json.load(open(sys.argv[1]))
print('transformers', d['transformers'], d['rows'], round(d['memory_GiB'], 1), 'GiB')" "$OUT/hf_$batch.json"
  done
}

gpt_oss_120b() {  # does gpt-oss-120b fit the card (peak memory, KV cache); its speed at 32 streams x (1,024 + 16)
  timeout 300 python3 -m tkr_embed.cli bench --model gpt-oss-120b --device cuda --streams 32 --prompt-len 1024 \
    --output-len 16 --warmup-streams > "$OUT/engine_120b.json" 2> "$OUT/engine_120b.err"
  summary "$OUT/engine_120b.json" 120b
}

case "${PART:-all}" in
  tests) tests ;;
  engine) engine ;;
  sweep) sweep ;;
  long) long_outputs ;;
  server) server ;;
  peers) llamacpp; hf ;;
  llamacpp) llamacpp ;;
  hf) hf ;;
  120b) gpt_oss_120b ;;
  all) tests; engine; sweep; long_outputs; server; llamacpp; hf; gpt_oss_120b ;;
  *) echo "PART must be tests, engine, sweep, long, server, peers, llamacpp, hf, 120b or all" >&2; exit 2 ;;
esac
