#!/usr/bin/env bash
# CI: compiles and links the COHORT_WITH_CUDA option against the CUDA
# toolkit in /usr/local/cuda (CUDA runtime + NCCL) so it never rots, in the
# model-only configuration the GPU run uses (scripts/device/gpu_check.sh).
# Nothing runs: with Debian's CPU LibTorch the torch parts stay on the CPU
# (the CUDA-graph decoder compiles as its stub), while the NCCL transport
# compiles and links for real (checked below).
#
# Cost: about 2.5 CPU-minutes with the ccache warm from scripts/build.sh
# (the torch units are the main build's; the NCCL unit, the model-only core
# units and four links are new): ~1.5 minutes on 2 idle cores, 9 minutes
# measured on a shared 2-core machine at load 14; cold about 6 minutes.
# Without a CUDA toolkit it skips, unless COHORT_REQUIRE_DATA=1 (CI).
# Usage: scripts/ci_cuda_build.sh [BUILD_DIR]   (default build-cuda)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build-cuda}
CUDA=${CUDAToolkit_ROOT:-/usr/local/cuda}
if [[ ! -f $CUDA/include/cuda_runtime_api.h ]] || ! ls "$CUDA"/lib*/libnccl.so* >/dev/null 2>&1; then
  if [[ ${COHORT_REQUIRE_DATA:-0} == 1 ]]; then
    echo "ci_cuda_build: no CUDA toolkit with NCCL under $CUDA (COHORT_REQUIRE_DATA=1)" >&2
    exit 1
  fi
  echo "ci_cuda_build: skipped: no CUDA toolkit with NCCL under $CUDA"
  exit 0
fi
start=$SECONDS
export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/ccache} CCACHE_BASEDIR=${CCACHE_BASEDIR:-$PWD}
CC=${CC:-clang} CXX=${CXX:-clang++} cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCOHORT_MODEL_ONLY=ON -DCOHORT_WITH_CUDA=ON -DCOHORT_FUZZ=OFF -DCUDAToolkit_ROOT="$CUDA" >/dev/null
cmake --build "$BUILD" -j"${COHORT_JOBS:-$(nproc)}" \
  --target cohort_weights_nccl broadcast_test gpu_test gpu_bench
# The NCCL unit must be the real one, not the stub.
nm -C "$BUILD/weights/libcohort_weights_nccl.a" | grep -q ncclCommInitRankConfig ||
  { echo "ci_cuda_build: cohort_weights_nccl was built without NCCL" >&2; exit 1; }
echo "ci_cuda_build: CUDA/NCCL targets compiled and linked in $((SECONDS - start)) s"
