#!/usr/bin/env bash
# Tokenizer encode throughput, single thread: cohort vs Hugging Face's Rust
# tokenizer (npm @anush008/tokenizers, prebuilt native binary) on the same
# corpus in the same run. Prints the JSON lines of both and a summary line
# with the ratio.
#
# Usage: bench/tokenizer_bench.sh [BUILD_DIR]   (default: build)
# Env:   TOKENIZER=path/tokenizer.json  CORPUS=path/golden.jsonl  MIN_MB=10
#        NPM_DIR=where to install the npm package (default: bench/node_modules's
#        parent, i.e. bench/, which .gitignore covers)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}
DATA=../shared/data/tokenizers/qwen3
TOKENIZER=${TOKENIZER:-$DATA/tokenizer.json}
CORPUS=${CORPUS:-$DATA/golden.jsonl}
MIN_MB=${MIN_MB:-10}
NPM_DIR=${NPM_DIR:-bench}

if [[ ! -x "$BUILD_DIR/bench/tokenizer_bench" ]]; then
  cmake --build "$BUILD_DIR" --target tokenizer_bench
fi
for f in "$TOKENIZER" "$CORPUS"; do
  [[ -f "$f" ]] || { echo "tokenizer_bench.sh: $f not found (set TOKENIZER / CORPUS)" >&2; exit 1; }
done
if [[ ! -d "$NPM_DIR/node_modules/@anush008/tokenizers" ]]; then
  (cd "$NPM_DIR" && npm install --no-save --no-package-lock @anush008/tokenizers >/dev/null)
fi

# One thread for everyone: Rayon (HF's batch encode) and libuv's pool.
export RAYON_NUM_THREADS=1 RAYON_RS_NUM_CPUS=1 UV_THREADPOOL_SIZE=1 TOKENIZERS_PARALLELISM=false
cohort_line=$("$BUILD_DIR/bench/tokenizer_bench" --tokenizer "$TOKENIZER" --corpus "$CORPUS" --min_mb "$MIN_MB")
echo "$cohort_line"
NPM_DIR=$(realpath "$NPM_DIR")
hf_lines=$(NODE_PATH="$NPM_DIR/node_modules" node bench/tokenizer_bench.js "$TOKENIZER" "$CORPUS" "$MIN_MB")
echo "$hf_lines"
python3 - "$cohort_line" "$hf_lines" <<'PY'
import json, sys
c = json.loads(sys.argv[1])
hf = [json.loads(l) for l in sys.argv[2].splitlines() if l.strip()]
best = max(hf, key=lambda r: r["mb_per_s"])
best_cpu = max(hf, key=lambda r: r["cpu_mb_per_s"])
same = all(r["tokens"] == c["tokens"] for r in hf)
print(json.dumps({"bench": "tokenizer_encode_summary",
                  "cohort_mb_per_s": round(c["mb_per_s"], 2),
                  **{r["impl"] + "_mb_per_s": round(r["mb_per_s"], 2) for r in hf},
                  "ratio_vs_best_hf": round(c["mb_per_s"] / best["mb_per_s"], 2),
                  "cohort_cpu_mb_per_s": round(c["cpu_mb_per_s"], 2),
                  **{r["impl"] + "_cpu_mb_per_s": round(r["cpu_mb_per_s"], 2) for r in hf},
                  "cpu_ratio_vs_best_hf": round(c["cpu_mb_per_s"] / best_cpu["cpu_mb_per_s"], 2),
                  "same_token_count": same}))
PY
