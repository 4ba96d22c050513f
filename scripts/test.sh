#!/usr/bin/env bash
# Sets up, builds and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
scripts/ci_cuda_build.sh  # compile+link the CUDA/NCCL option (docs/gpu.md)
cd "${COHORT_BUILD_DIR:-build}"
ctest --output-on-failure -j"${COHORT_TEST_JOBS:-2}" --timeout 600 "$@"
