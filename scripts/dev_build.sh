#!/usr/bin/env bash
# Developer build: compiles the native modules with CMake and drops them into vdengine/ so that
# `PYTHONPATH=. python ...` from the repository root uses them without a pip install.
# Usage: scripts/dev_build.sh [--cuda]   (CPU only unless --cuda: nvcc then must compile csrc/cuda)
set -euo pipefail
cd "$(dirname "$0")/.."
cuda=OFF
[ "${1:-}" = "--cuda" ] && cuda=ON
build="build/dev-cuda-$cuda"
exec 9>/tmp/vdengine-dev-build.lock
flock 9
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DVDENGINE_CUDA=$cuda \
  -Dpybind11_DIR="$(python -m pybind11 --cmakedir)" -DPython_EXECUTABLE="$(command -v python)" >/dev/null
cmake --build "$build" -j 2
# Copy then rename: running processes keep the old file instead of crashing on a rewritten one.
for so in "$build"/_C*.so; do
  cp "$so" "vdengine/.$(basename "$so").tmp" && mv -f "vdengine/.$(basename "$so").tmp" "vdengine/$(basename "$so")"
done
[ "$cuda" = ON ] || rm -f vdengine/_C_cuda*.so
cp "$build"/_build_config.py vdengine/
echo "dev build ($cuda CUDA) -> vdengine/"
