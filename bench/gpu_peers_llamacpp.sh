#!/usr/bin/env bash
# llama.cpp on the same card as our engine, at the widths of our sweep: builds llama-bench and llama-batched-bench from
# the source bundle that bench/peers_bundle.sh made (.peers/, carried), writes a random GGUF of gpt-oss's shape
# (bench/random_gguf.py, while the build runs), then measures
#   llama-bench          pp$PROMPT and tg$NEW at batch 1 (one sequence), all layers on the GPU, flash attention on;
#   llama-batched-bench  $WIDTHS streams at once, each $PROMPT prompt tokens + $NEW generated, flash attention on.
# Prints the seconds of each phase and one table (a row a width), and writes $OUT/llamacpp.json.
#   bash bench/gpu_peers_llamacpp.sh [OUT]      (from the repository root; `PART=llamacpp bash bench/gpu.sh` runs it)
# Environment: WIDTHS ("1 16 64 128 256"), PROMPT (1024), NEW (256), SHAPE (20b | tiny), KVU (0: a KV buffer per
# stream, llama.cpp's high-throughput layout for independent sequences; 1: one unified buffer, llama-server's default),
# CPU (1: a CPU-only build, to check the script where there is no GPU), JOBS (all cores), WORK (.peers-work: the
# source, build, GGUF and logs; a second call on a still-warm machine reuses them), BUDGET (520: seconds from the
# start after which llama-batched-bench is stopped, inside a device call's 10 minutes).
set -u
OUT=${1:-${OUT:-/tmp/tkr-out}}
WORK=${WORK:-.peers-work}
WIDTHS=${WIDTHS:-1 16 64 128 256}
PROMPT=${PROMPT:-1024}
NEW=${NEW:-256}
SHAPE=${SHAPE:-20b}
KVU=${KVU:-0}
BUDGET=${BUDGET:-520}
CPU=${CPU:-0}
JOBS=${JOBS:-$(nproc)}
PYTHON=${PYTHON:-python3}
BUNDLE=.peers/llama.cpp.tar.gz
mkdir -p "$OUT" "$WORK/logs"
WORK=$(cd "$WORK" && pwd)
LOGS=$WORK/logs
started=$(date +%s)
phase_start=$started
PHASES=()

phase_done() {  # NAME: how long the phase took, printed and kept for the JSON
  local now; now=$(date +%s)
  PHASES+=("$1=$((now - phase_start))")
  echo "llamacpp phase $1: $((now - phase_start)) s (total $((now - started)) s)"
  phase_start=$now
}

fail() {  # MESSAGE [LOG]: say what failed, with the end of its log
  echo "llamacpp FAILED: $1" >&2
  [[ -n ${2:-} && -f $2 ]] && tail -25 "$2" >&2
  exit 1
}

# A toolkit assembled from NVIDIA's pip wheels may lack cuBLAS, which llama.cpp links, and the driver library may have
# no unversioned name to link against. Then cuBLAS comes from the pip wheel PyTorch uses (nvidia/cu13: its headers
# only, beside the toolkit's own), and libcuda.so from the driver's libcuda.so.1; with no driver library at all,
# llama.cpp's pool does without the driver's virtual memory (GGML_CUDA_NO_VMM).
cuda_libraries() {
  local toolkit links=$WORK/cuda-links found header library driver dir
  toolkit=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")
  rm -rf "$links"; mkdir -p "$links/include"
  backend+=(-DCMAKE_LIBRARY_PATH="$links")
  if [[ ! -f $toolkit/include/cublas_v2.h ]]; then
    found=$("$PYTHON" -c 'import nvidia; print(*nvidia.__path__)' 2> /dev/null)
    header=$( (find $found -name cublas_v2.h 2> /dev/null) | head -1)
    [[ -n $header ]] || fail "no cuBLAS: neither in the CUDA toolkit ($toolkit) nor in a pip nvidia package"
    ln -s "$(dirname "$header")"/cublas*.h "$links/include/"
    for library in cublas cublasLt; do
      found=$(find "$(dirname "$(dirname "$header")")" -name "lib$library.so.[0-9]*" | sort | head -1)
      ln -s "$found" "$links/lib$library.so"
    done
    backend+=(-DCMAKE_CUDA_FLAGS="-I$links/include" -DCMAKE_CXX_FLAGS="-I$links/include")
    export LD_LIBRARY_PATH=$(dirname "$found")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    echo "llamacpp cuBLAS from $(dirname "$(dirname "$header")")"
  fi
  if ! compgen -G "$toolkit/lib*/stubs/libcuda.so" > /dev/null && ! ldconfig -p | grep -q 'libcuda\.so '; then
    driver=$(ldconfig -p | awk '/libcuda\.so\.1 /{print $NF; exit}')
    dir=${LD_LIBRARY_PATH:-}
    for dir in ${dir//:/ } /usr/local/nvidia/lib64 /usr/lib/x86_64-linux-gnu /usr/lib64; do
      [[ -z $driver && -e $dir/libcuda.so.1 ]] && driver=$dir/libcuda.so.1
    done
    if [[ -n $driver ]]; then
      ln -s "$driver" "$links/libcuda.so"
    else
      backend+=(-DGGML_CUDA_NO_VMM=ON); echo "llamacpp no libcuda.so.1 found: built with GGML_CUDA_NO_VMM"
    fi
  fi
}

[[ -f $BUNDLE ]] || fail "$BUNDLE is missing: run bash bench/peers_bundle.sh here and carry .peers"

# unpack (skipped when the same commit is already there)
commit=$(tar -xzOf "$BUNDLE" llama.cpp/LLAMA_CPP_COMMIT)
if [[ $(cat "$WORK/llama.cpp/LLAMA_CPP_COMMIT" 2>/dev/null) != "$commit" ]]; then
  rm -rf "$WORK/llama.cpp" && tar -xzf "$BUNDLE" -C "$WORK" || fail "cannot unpack $BUNDLE"
fi
phase_done unpack

# the GGUF, in the background while the compilers hold the cores (it needs one core and the disk)
gguf=$WORK/gpt-oss-$SHAPE.gguf
if [[ ! -f $gguf ]]; then
  PYTHONPATH=$WORK/llama.cpp/gguf-py:${PYTHONPATH:-} "$PYTHON" bench/random_gguf.py --shape "$SHAPE" "$gguf.partial" \
    > "$LOGS/gguf.log" 2>&1 && mv "$gguf.partial" "$gguf" &
  gguf_pid=$!
else
  gguf_pid=
fi

# build: Release, the two benchmark tools only
if [[ $CPU == 1 ]]; then
  build=$WORK/build-cpu; backend=(-DGGML_CUDA=OFF)
else
  build=$WORK/build-cuda; backend=(-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90)
  command -v nvcc > /dev/null || export PATH=$PATH:/usr/local/cuda/bin
  cuda_libraries
fi
cmake -S "$WORK/llama.cpp" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release "${backend[@]}" \
  -DLLAMA_BUILD_COMMIT="${commit:0:7}" -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
  -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF > "$LOGS/configure.log" 2>&1 || fail "cmake configure" "$LOGS/configure.log"
cmake --build "$build" -j "$JOBS" --target llama-bench llama-batched-bench > "$LOGS/build.log" 2>&1 \
  || fail "build" "$LOGS/build.log"
phase_done build

if [[ -n $gguf_pid ]]; then
  wait "$gguf_pid" || fail "bench/random_gguf.py" "$LOGS/gguf.log"
fi
phase_done gguf_wait
[[ -f $gguf ]] || fail "no GGUF at $gguf" "$LOGS/gguf.log"
echo "llamacpp $gguf: $(du -h "$gguf" | cut -f1)"

offload=(-ngl 999)
cpu_bench=()
cpu_batched=()
if [[ $CPU == 1 ]]; then
  # no weight repacking: the AMX repack of Q8_0 crashes on the tiny shape's 64-wide rows (seen at this commit)
  offload=(-ngl 0); cpu_bench=(-t "$JOBS" --repack 0); cpu_batched=(-t "$JOBS" --no-repack)
fi

# batch 1: the prompt as one batch, then one token a step
timeout 150 "$build/bin/llama-bench" -m "$gguf" -p "$PROMPT" -n "$NEW" "${offload[@]}" "${cpu_bench[@]}" -fa on -r 3 \
  -o json > "$WORK/llama_bench.json" 2> "$LOGS/llama_bench.log" || fail "llama-bench" "$LOGS/llama_bench.log"
phase_done llama_bench

# the widths, narrowest first: each a fresh set of streams whose prompts are prefilled together (8,192 tokens a
# call, 2,048 a micro-batch), then one token per stream a step; the context holds the widest width's prompts and
# outputs. What is left of BUDGET bounds it: the rows of the widths that finished are reported all the same.
max_width=$(tr ' ' '\n' <<< "$WIDTHS" | sort -n | tail -1)
unified=(); [[ $KVU == 1 ]] && unified=(-kvu)
limit=$((BUDGET - ($(date +%s) - started)))
limit=$((limit > 30 ? limit : 30))
timeout $limit stdbuf -oL "$build/bin/llama-batched-bench" -m "$gguf" \
  -c $((max_width * (PROMPT + NEW))) -b 8192 -ub 2048 -npp "$PROMPT" -ntg "$NEW" -npl "$(tr ' ' ',' <<< "$WIDTHS")" \
  "${offload[@]}" "${cpu_batched[@]}" -fa on -fit off "${unified[@]}" --output-format jsonl \
  > "$WORK/batched_bench.jsonl" 2> "$LOGS/batched_bench.log"
batched_rc=$?
if [[ $batched_rc == 124 ]]; then
  echo "llamacpp llama-batched-bench stopped after $limit s (BUDGET $BUDGET s): the widest widths are missing"
elif [[ $batched_rc != 0 ]]; then
  fail "llama-batched-bench (rc $batched_rc)" "$LOGS/batched_bench.log"
fi
phase_done batched_bench

"$PYTHON" - "$WORK" "$OUT/llamacpp.json" "$commit" "$SHAPE" "$KVU" "$CPU" "${PHASES[*]}" "$batched_rc" <<'EOF'
import json, pathlib, sys
work, out, commit, shape, kvu, cpu, phases, batched_rc = sys.argv[1:]
work = pathlib.Path(work)
bench = json.loads((work / "llama_bench.json").read_text())
rows = [json.loads(line) for line in (work / "batched_bench.jsonl").read_text().splitlines() if line.startswith("{")]
batch1 = {f"{'pp' if r['n_prompt'] else 'tg'}{r['n_prompt'] or r['n_gen']}": round(r["avg_ts"], 1) for r in bench}
sweep = [
    {
        "streams": r["pl"], "prompt": r["pp"], "new": r["tg"],
        "output_tok_s": round(r["pl"] * r["tg"] / r["t"], 1),  # as our bench counts: output over the whole wall
        "decode_tok_s": round(r["speed_tg"], 1), "prefill_tok_s": round(r["speed_pp"], 1),
        "prefill_s": round(r["t_pp"], 3), "decode_s": round(r["t_tg"], 3), "seconds": round(r["t"], 3),
    }
    for r in rows
]
report = {
    "engine": "llama.cpp", "commit": commit, "shape": shape, "kv_unified": kvu == "1", "cpu_only": cpu == "1",
    "gpu": bench[0].get("gpu_info"), "model_size_gib": round(bench[0]["model_size"] / 2**30, 2),
    "model_type": bench[0].get("model_type"), "batch1_tok_s": batch1, "llama_bench": bench, "sweep": sweep,
    "sweep_stopped_by_budget": batched_rc == "124",
    "phases_s": {k: int(v) for k, v in (p.split("=") for p in phases.split())},
}
pathlib.Path(out).write_text(json.dumps(report, indent=1))
print(f"llamacpp {commit[:7]} {report['gpu']} {report['model_type']} {report['model_size_gib']} GiB, batch 1:",
      ", ".join(f"{k} {v} tok/s" for k, v in batch1.items()))
print(f"llamacpp {'streams':>7} {'output tok/s':>12} {'decode tok/s':>12} {'prefill tok/s':>13} {'wall s':>8}")
for row in sweep:
    print(f"llamacpp {row['streams']:>7} {row['output_tok_s']:>12} {row['decode_tok_s']:>12} "
          f"{row['prefill_tok_s']:>13} {row['seconds']:>8}")
EOF
echo "llamacpp total $(($(date +%s) - started)) s"
