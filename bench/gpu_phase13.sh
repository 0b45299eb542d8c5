#!/usr/bin/env bash
# Phase 13 on the device (carry .whl and _base, the previous tree's tkr_embed from `git archive`):
#   PART=measure bash bench/gpu_phase13.sh   # this tree against _base (engine bench), the decode step with more attention
#                                            # splits, the kernels of a decode step and of a prefill step of 8 prompts, GPU tests
#   PART=idle bash bench/gpu_phase13.sh      # the engine with and without the idle step budget, then both traced
#                                            # step by step, then the server traced (where its waves' steps go)
#   PART=attention bash bench/gpu_phase13.sh # GPU tests, attention tiles, the engine against _base (the tree before)
#   PART=room bash bench/gpu_phase13.sh      # GPU tests; 20b and 120b (8,192-token budget): the idle budget each gets, KV
#   PART=table bash bench/gpu_phase13.sh     # the card's table: the engine (defaults), HF transformers' generate, same run
#   PART=final bash bench/gpu_phase13.sh     # GPU tests, the engine twice, the graphed step with cuBLAS and with cuBLASLt
#   PART=sweep bash bench/gpu_phase13.sh     # GPU tests; decode attention warps/stages; prefill dequantization groups;
#                                            # the prefill MoE's kernels of this tree and of _base; the engine twice
#   PART=split bash bench/gpu_phase13.sh     # GPU tests; the engine against _base, in turn; the server
#   PART=card bash bench/gpu_phase13.sh      # one card's figures: the engine with and without the idle budget, the
#                                            # prefill attention of this tree and of _base, the server
set -u
source bench/gpu_setup.sh
base_bench() {  # the engine bench of the tree in _base
  (cd _base && PYTHONPATH=/tmp/site:$PWD timeout 150 python3 -m tkr_embed.cli bench --model gpt-oss-20b --device cuda $SHAPE \
    > "$OUT/base.json" 2>"$OUT/base.err")
  summary "$OUT/base.json" "engine _base"
}
prefill_profile() {  # a decode step of 64 and one prefill step of 8 prompts of 1,024 tokens, kernels by GPU time
  timeout 200 python3 bench/with_patch.py ${PATCH:-} -- bench/gpu_profile_step.py --batch 64 --context 1024 --profile \
    --prefill 8192 --prompts 8 > "$OUT/profile.json" 2>"$OUT/profile.err" || tail -5 "$OUT/profile.err"
  python3 -c "
import json,sys; d=json.load(open(sys.argv[1]))
for r in d['rows']:
    print({k: v for k, v in r.items() if k != 'top_kernels'})
    for k in r.get('top_kernels', [])[:22]: print('   ', k['ms'], k['count'], k['name'][:80])" "$OUT/profile.json"
}
traced_server() {
  SERVER_CMD="python3 bench/step_trace.py $OUT/trace_server.json -- -m tkr_embed.api.server" TTFT_REQUESTS=10 \
    LOAD_TIMEOUT=60 START_WAIT=120 bash bench/gpu_serve_load.sh "$OUT" 2>&1 | grep -E "^server|rror"
  python3 bench/step_trace.py --summary "$OUT/trace_server.json" "$OUT"/load_*.json | sed "s/^/trace server /"
}
ONE_BUDGET="--max-num-batched-tokens-idle 8192"
moe_kernels() {  # $1: label, then the command's words: one MoE layer of 8,192 and 32,768 tokens, named kernels' ms
  label=$1; shift
  timeout 200 "$@" --tokens 8192 32768 --profile > "$OUT/moe.json" 2>"$OUT/moe.err" || tail -3 "$OUT/moe.err"
  python3 -c "
import json,sys
for r in json.load(open(sys.argv[1]))['rows']:
    ks = {k['name'][:24]: k['ms'] for k in r.get('top_kernels', []) if k['name'].startswith(('_dequant', '_bias_swiglu', '_materialize'))}
    print(sys.argv[2], r['tokens'], r['prefill_ms'], ks)" "$OUT/moe.json" "$label"
}
case "${PART:-measure}" in
  split)
    tests; bench; base_bench; bench; base_bench
    TTFT_REQUESTS=10 LOAD_TIMEOUT=60 START_WAIT=120 bash bench/gpu_serve_load.sh "$OUT" 2>&1 | grep -E "^server|rror" ;;
  sweep)
    tests
    timeout 200 python3 bench/gpu_attention_tiles.py --prompts 8 > "$OUT/attention.json" 2>"$OUT/attention.err" || tail -3 "$OUT/attention.err"
    python3 -c "import json,sys; [print(r) for r in json.load(open(sys.argv[1]))['rows'] if 'decode_seqs' in r]" "$OUT/attention.json"
    for groups in 64 32 128 256; do
      moe_kernels "groups=$groups" python3 bench/with_patch.py tkr_embed.backends.torch.kernels.mxfp4_moe_prefill.DEQUANT_GROUPS=$groups -- bench/gpu_moe_prefill.py
    done
    (cd _base && PYTHONPATH=/tmp/site:$PWD moe_kernels "_base" python3 bench/gpu_moe_prefill.py)
    bench; bench ;;
  final)
    tests; bench; bench; step
    timeout 120 python3 -c "import runpy, sys, torch; torch.backends.cuda.preferred_blas_library('cublaslt'); \
sys.argv = ['gpu_profile_step.py', '--batch', '1', '64', '--context', '1024']; sys.path.insert(0, 'bench'); \
runpy.run_path('bench/gpu_profile_step.py', run_name='__main__')" > "$OUT/step_lt.json" 2>"$OUT/step_lt.err" || tail -3 "$OUT/step_lt.err"
    python3 -c "import json,sys; print('step cublaslt', [(r['batch'], r['graphed_ms'], r.get('replay_ms')) for r in json.load(open(sys.argv[1]))['rows']])" "$OUT/step_lt.json" ;;
  table)
    bench
    for batch in 1 8 64; do   # one process a batch size: a batch that runs out of memory leaves the others
      timeout 200 python3 bench/gpu_hf_generate.py --batch $batch --prompt 1024 --new 256 > "$OUT/hf_$batch.json" 2>"$OUT/hf_$batch.err" \
        || tail -2 "$OUT/hf_$batch.err"
      python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print('hf', d['device'], d['transformers'], d['rows'], round(d['memory_GiB'], 1))" "$OUT/hf_$batch.json"
    done ;;
  room)
    tests; bench
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print('20b', d['max_num_batched_tokens'], d['max_num_batched_tokens_idle'], d['runner'].get('kv_cache_gib'))" "$OUT/bench.json"
    timeout 300 python3 -m tkr_embed.cli bench --model gpt-oss-120b --device cuda --streams 32 --prompt-len 1024 --output-len 16 \
      --max-num-batched-tokens 8192 --warmup-streams > "$OUT/b120.json" 2>"$OUT/b120.err" || tail -3 "$OUT/b120.err"
    summary "$OUT/b120.json" "120b 32 x 1024"
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print('120b', d['max_num_batched_tokens'], d['max_num_batched_tokens_idle'], d['runner'].get('kv_cache_gib'), d.get('max_memory_allocated_gib'))" "$OUT/b120.json" ;;
  card)
    bench; SHAPE="$SHAPE $ONE_BUDGET" bench; bench
    timeout 200 python3 bench/gpu_attention_tiles.py --prompts 8 > "$OUT/attention.json" 2>"$OUT/attention.err" || tail -3 "$OUT/attention.err"
    (cd _base && PYTHONPATH=/tmp/site:$PWD timeout 200 python3 ../bench/gpu_attention_tiles.py --prompts 8 > "$OUT/attention_base.json" 2>"$OUT/attention_base.err") || tail -3 "$OUT/attention_base.err"
    python3 -c "import json,sys; [print(label, r) for label, f in (('this', sys.argv[1]), ('_base', sys.argv[2])) for r in json.load(open(f))['rows'] if r.get('tile') == [64, 64, 4, 2] or r.get('decode_block_n') == [64, 64]]" "$OUT/attention.json" "$OUT/attention_base.json"
    TTFT_REQUESTS=10 LOAD_TIMEOUT=60 START_WAIT=120 bash bench/gpu_serve_load.sh "$OUT" 2>&1 | grep -E "^server|rror" ;;
  attention)
    tests
    timeout 200 python3 bench/gpu_attention_tiles.py > "$OUT/attention.json" 2>"$OUT/attention.err" || tail -5 "$OUT/attention.err"
    python3 -c "import json,sys; [print(r) for r in json.load(open(sys.argv[1]))['rows']]" "$OUT/attention.json"
    bench; base_bench; bench; base_bench ;;
  idle)
    bench; SHAPE="$SHAPE $ONE_BUDGET" bench; bench
    python3 -c "import json,sys; print('kv_cache_gib', json.load(open(sys.argv[1]))['runner'].get('kv_cache_gib'))" "$OUT/bench.json"
    traced_bench idle; SHAPE="$SHAPE $ONE_BUDGET" traced_bench one_budget
    traced_server ;;
  measure)
    bench; base_bench; bench
    step; PATCH="tkr_embed.backends.torch.kernels.paged_attention.TARGET_PROGRAMS=1024" step
    prefill_profile
    tests ;;
esac
