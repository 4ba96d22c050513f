#!/usr/bin/env bash
# The GPU run of docs/gpu.md, in one script, sized for under 6 minutes on an
# H200 machine that has python3 with torch (CUDA) and transformers, CMake,
# ninja and a C++ compiler, but no network, no gRPC and no Protobuf.
#
# Before (on the build machine): scripts/device/fetch_debs.sh   (-> .debs/)
# Then (device tool):  command "scripts/device/gpu_check.sh", carry [".debs"],
#                      timeout_s 420.
#
# Steps, each logged with its elapsed time to $OUT/gpu_check.log; every
# figure goes to $OUT/figures.jsonl as soon as it is measured:
#   1. torch: version, CUDA, C++ ABI (must be the C++11 ABI, as Debian's)
#   2. the carried .debs unpacked with dpkg -x into a private prefix and a
#      probe program built and run against them: stops at once if they do
#      not load here
#   3. in parallel: (a) cmake + build of the model-only CUDA tree against
#      this machine's torch; (b) a random qwen2.5-0.5b Hugging Face
#      directory and transformers' eager generate figures on it
#   4. GPU tests (model gpu_test, weights broadcast_test incl. the one-rank
#      NCCL smoke), their figures too
#   5. gpu_bench: roofline, decode eager vs CUDA graphs at batch 1/64/256 on
#      the same directory, learner step MFU (qwen2.5-1.5b shape), staging
#   6. transformers' static cache + torch.compile at batch 64, if the time
#      left allows; then $OUT/summary.json with the issue's ratios
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/cohort_gpu_check}
mkdir -p "$OUT"
START=$SECONDS
BUDGET=${COHORT_GPU_BUDGET_S:-345}
DEBS=${COHORT_DEBS:-.debs}
PREFIX=/tmp/cohort_prefix
BUILD=/tmp/cohort_gpu_build
MODEL=/tmp/cohort_qwen05
export PYTHONUNBUFFERED=1
log() { echo "[gpu_check +$((SECONDS - START))s] $*" | tee -a "$OUT/gpu_check.log"; }
fatal() { log "FATAL: $*"; exit 2; }
left() { echo $((BUDGET - (SECONDS - START))); }
figs() { grep --line-buffered '^{' | tee -a "$OUT/figures.jsonl"; }

# 1. torch and its ABI.
python3 - <<'PY' >"$OUT/torch.json" 2>>"$OUT/gpu_check.log" || fatal "python3 cannot import torch"
import json, torch, torch.utils
info = {"torch": torch.__version__, "cuda": torch.version.cuda,
        "cxx11_abi": bool(torch.compiled_with_cxx11_abi()),
        "cuda_available": torch.cuda.is_available(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cmake_prefix_path": torch.utils.cmake_prefix_path}
try:
    import transformers
    info["transformers"] = transformers.__version__
except Exception as e:
    info["transformers"] = None
print(json.dumps(info))
PY
log "torch: $(cat "$OUT/torch.json")"
python3 -c 'import json,sys; i=json.load(open(sys.argv[1])); sys.exit(0 if i["cxx11_abi"] else 1)' \
  "$OUT/torch.json" || fatal "torch uses the pre-C++11 ABI; the carried Debian libraries use the C++11 ABI"
TORCH_PREFIX=$(python3 -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')

# 2. carried packages.
CXX=${CXX:-$(command -v g++ || command -v c++ || command -v clang++ || true)}
[[ -n $CXX ]] || fatal "no C++ compiler (g++, c++, clang++) on this machine"
export CXX
ls "$DEBS"/*.deb >/dev/null 2>&1 || fatal "no .deb files in $DEBS (run scripts/device/fetch_debs.sh and carry $DEBS)"
rm -rf "$PREFIX" && mkdir -p "$PREFIX"
for f in "$DEBS"/*.deb; do dpkg -x "$f" "$PREFIX" || fatal "dpkg -x $f failed"; done
LIB=$PREFIX/usr/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH=$LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
cat >/tmp/cohort_probe.cc <<'CC'
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
TEST(Probe, CarriedPackagesLoad) {
  absl::StatusOr<int> v = absl::InvalidArgumentError(absl::StrCat("x", 1));
  EXPECT_EQ(v.status().message(), "x1");
  EXPECT_EQ(nlohmann::json::parse("[1]")[0], 1);
}
CC
"$CXX" -std=c++20 -isystem "$PREFIX/usr/include" /tmp/cohort_probe.cc -o /tmp/cohort_probe \
  -L"$LIB" -lgtest_main -lgtest -labsl_statusor -labsl_status -labsl_strings -labsl_raw_logging_internal \
  -pthread -Wl,-rpath,"$LIB" >>"$OUT/gpu_check.log" 2>&1 || fatal "probe against the carried packages does not build"
/tmp/cohort_probe >>"$OUT/gpu_check.log" 2>&1 || fatal "probe against the carried packages does not run"
log "carried packages load ($CXX)"

# 3a. build (background).
NCCL_HINT=$(python3 -c 'import nvidia.nccl, os; print(list(nvidia.nccl.__path__)[0])' 2>/dev/null || true)
NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
CUDA_ROOT=$(dirname "$(dirname "$NVCC")")
GEN=Ninja; command -v ninja >/dev/null || GEN="Unix Makefiles"
(
  cmake -S . -B "$BUILD" -G "$GEN" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER="$CXX" \
    -DCOHORT_MODEL_ONLY=ON -DCOHORT_WITH_CUDA=ON -DCOHORT_WERROR=OFF -DCOHORT_FUZZ=OFF \
    -DCMAKE_PREFIX_PATH="$PREFIX/usr;$TORCH_PREFIX" -DCUDAToolkit_ROOT="$CUDA_ROOT" \
    -DCMAKE_CUDA_COMPILER="$NVCC" ${NCCL_HINT:+-DNCCL_ROOT="$NCCL_HINT"} &&
  cmake --build "$BUILD" -j"$(nproc)" --target gpu_test broadcast_test gpu_bench
) >"$OUT/build.log" 2>&1 &
BUILD_PID=$!

# 3b. the shared model directory and transformers' eager figures.
MODEL_ARGS=(--model_dir "$MODEL")
if python3 scripts/device/hf_generate_bench.py --make-model "$MODEL" >>"$OUT/gpu_check.log" 2>&1; then
  log "model directory ready"
else
  log "could not write the qwen2.5-0.5b directory: cohort decodes random weights, no transformers figures"
  MODEL_ARGS=()
fi
timeout $(( $(left) / 3 )) python3 scripts/device/hf_generate_bench.py --model "$MODEL" \
  --variants eager --batches 1,64,256 2>>"$OUT/gpu_check.log" | figs
log "transformers eager done"

wait $BUILD_PID
BUILD_RC=$?
tail -5 "$OUT/build.log" | while read -r l; do log "build: $l"; done
if [[ $BUILD_RC -ne 0 ]]; then
  log "build failed (rc $BUILD_RC); see build.log"
else
  log "build done"
  # 4. GPU tests.
  timeout 120 "$BUILD/model/gpu_test" 2>&1 | tee "$OUT/tests.log" | figs >/dev/null
  timeout 60 "$BUILD/weights/broadcast_test" >>"$OUT/tests.log" 2>&1
  grep -E '^\[  (PASSED|FAILED|SKIPPED) |^\[  FAILED  \]' "$OUT/tests.log" | while read -r l; do log "tests: $l"; done
  # 5. cohort's figures.
  bench_s=$(( $(left) - 60 )); (( bench_s > 150 )) && bench_s=150; (( bench_s < 60 )) && bench_s=60
  timeout "$bench_s" "$BUILD/bench/gpu_bench" "${MODEL_ARGS[@]}" \
    2>>"$OUT/gpu_check.log" | figs
  log "gpu_bench done"
fi

# 6. transformers' best variant, in the time left.
if (( $(left) > 60 )); then
  timeout $(( $(left) - 15 )) python3 scripts/device/hf_generate_bench.py --model "$MODEL" \
    --variants static_compile --batches 64 2>>"$OUT/gpu_check.log" | figs
  log "transformers static+compile done (or timed out)"
else
  log "no time left for transformers static cache + torch.compile"
fi
python3 scripts/device/hf_generate_bench.py --summary "$OUT/figures.jsonl" >"$OUT/summary.json" 2>>"$OUT/gpu_check.log"
log "summary: $(cat "$OUT/summary.json")"
[[ $BUILD_RC -eq 0 ]]
