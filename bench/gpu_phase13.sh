#!/usr/bin/env bash
# Phase 13 on the device (carry .whl and _base, the previous tree's tkr_embed from `git archive`):
#   PART=measure bash bench/gpu_phase13.sh   # this tree against _base (engine bench), the decode step with more attention
#                                            # splits, the kernels of a decode step and of a prefill step of 8 prompts, GPU tests
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
case "${PART:-measure}" in
  measure)
    bench; base_bench; bench
    step; PATCH="tkr_embed.backends.torch.kernels.paged_attention.TARGET_PROGRAMS=1024" step
    prefill_profile
    tests ;;
esac
