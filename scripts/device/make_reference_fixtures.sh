#!/usr/bin/env bash
# Step 1 of the Hugging Face reference check (docs/models.md), on the build
# machine: writes the tiny random models under model/testdata/hf_ref/ and
# cohort's logits for a fixed input next to each (cohort_logits.json).
# The weights use std 0.2 rather than 0.02 so that attention, RoPE and the
# norms change the logits by more than the tolerance.
# Usage: scripts/device/make_reference_fixtures.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
IDS=0,1,2,3,100,200,300,1023,512,7,7,7,42,900,64,65,66,500,501,3,2,1,0,777
for preset in tiny tiny-qwen2 tiny-llama; do
  dir=model/testdata/hf_ref/${preset//-/_}
  "$BUILD/cli/cohort" init-model --preset "$preset" --seed 1234 --init_std 0.2 --out "$dir"
  "$BUILD/model/cohort-dump-logits" --model "$dir" --ids "$IDS" --out "$dir/cohort_logits.json"
done
