#!/usr/bin/env bash
# The llama.cpp source that bench/gpu_peers_llamacpp.sh builds on the GPU machine, which has no internet: run here,
# from the repository root. Downloads the pinned llama-cpp-python sdist (it vendors llama.cpp), keeps what CMake and
# the two benchmark tools (llama-bench, llama-batched-bench) need, plus gguf-py for bench/random_gguf.py, and writes
#   .peers/llama.cpp.tar.gz    (a few MB: the sdist is 77 MB, over what a device call carries)
#   .peers/llama.cpp.version   (the llama-cpp-python version and the llama.cpp commit inside it)
# Usage: bash bench/peers_bundle.sh            (LLAMA_CPP_PYTHON=0.3.36 by default)
set -euo pipefail
VERSION=${LLAMA_CPP_PYTHON:-0.3.36}
PYTHON=${PYTHON:-.venv/bin/python}
DEST=.peers
for ignored in "/$DEST/" /.peers-work/; do  # the bundle; the device script's build and GGUF
  grep -qxF "$ignored" .git/info/exclude 2>/dev/null || echo "$ignored" >> .git/info/exclude
done
mkdir -p "$DEST"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$PYTHON" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$work"
tar -xzf "$work/llama_cpp_python-$VERSION.tar.gz" -C "$work"
root=$work/llama_cpp_python-$VERSION
src=$root/vendor/llama.cpp
# The sdist carries the llama-cpp-python checkout's git folder: HEAD of its llama.cpp submodule is the commit.
commit=$(cat "$root/.git/modules/vendor/llama.cpp/HEAD")
[[ $commit =~ ^[0-9a-f]{40}$ ]] || { echo "no llama.cpp commit in the sdist (read '$commit')" >&2; exit 1; }
echo "$commit" > "$src/LLAMA_CPP_COMMIT"

# CMake configures every subdirectory the top-level lists name, so those stay even where only two targets are built;
# what goes is what the options below turn off on the device (tests, examples, server, web UI, app) and what no
# build reads (docs, sample models, media, other GPU backends).
excludes=(.git .github .devops docs models media benches tests examples pocs app scripts conversion skills ci grammars
  tools/ui tools/server tools/mtmd/tests gguf-py/tests gguf-py/gguf/scripts)
for backend in "$src"/ggml/src/ggml-*/; do
  name=$(basename "$backend")
  [[ $name == ggml-cpu || $name == ggml-cuda ]] || excludes+=("ggml/src/$name")
done
args=(--anchored)  # a pattern names a path from the top: "models" must not take src/models with it
for path in "${excludes[@]}"; do args+=("--exclude=llama.cpp/$path"); done
args+=(--exclude='llama.cpp/convert_*.py' --exclude='llama.cpp/tools/mtmd/*.mp4')
tar -C "$work/llama_cpp_python-$VERSION/vendor" "${args[@]}" -czf "$DEST/llama.cpp.tar.gz" llama.cpp
printf 'llama-cpp-python %s\nllama.cpp %s\n' "$VERSION" "$commit" > "$DEST/llama.cpp.version"
echo "$DEST/llama.cpp.tar.gz: $(du -h "$DEST/llama.cpp.tar.gz" | cut -f1), llama-cpp-python $VERSION, llama.cpp $commit"
