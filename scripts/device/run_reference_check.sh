#!/usr/bin/env bash
# The Hugging Face reference check: does transformers compute the same
# logits as cohort for the same model directory?
#
#   1. On the build machine (C++): scripts/device/make_reference_fixtures.sh
#      writes tiny random models (qwen3-, qwen2- and llama-style) under
#      model/testdata/hf_ref/<name>/ with cohort_logits.json (cohort's fp32
#      logits for 24 fixed ids).
#   2. On any machine with python3 + torch + transformers (no C++ needed;
#      the project's GPU machine has them): this script. For each fixture it
#      loads the directory with AutoModelForCausalLM in float32 (eager
#      attention), on the CPU and, when CUDA is there, on the GPU with TF32
#      off, and compares with cohort's logits (max abs diff <= 1e-4). It
#      writes transformers' CPU logits as OUT_DIR/<name>.hf_logits.json and
#      a summary OUT_DIR/reference_check.jsonl.
#   3. Back on the build machine: copy each OUT_DIR/<name>.hf_logits.json to
#      model/testdata/hf_ref/<name>/hf_logits.json and commit; from then on
#      reference_logits_test compares cohort against them on the CPU in CI.
#
# Usage: scripts/device/run_reference_check.sh [OUT_DIR]   (exit 1 if any fails)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT_DIR=${1:-${OUT:-/tmp/cohort_reference_check}}
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__, "cuda", torch.cuda.is_available())'
devices=cpu
python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' && devices="cpu cuda"
fail=0
for dir in model/testdata/hf_ref/*/; do
  name=$(basename "$dir")
  [[ -f "$dir/cohort_logits.json" ]] || { echo "skip $name: no cohort_logits.json"; continue; }
  for dev in $devices; do
    extra=()
    [[ $dev == cpu ]] && extra=(--out "$OUT_DIR/$name.hf_logits.json")
    python3 scripts/device/check_hf_logits.py --model "$dir" \
      --cohort-logits "$dir/cohort_logits.json" --device "$dev" "${extra[@]}" \
      | tee -a "$OUT_DIR/reference_check.jsonl" || fail=1
  done
done
exit $fail
