#!/usr/bin/env bash
# The quickstart's GRPO stage against the single-process PyTorch reference
# (../shared/reference/tiny_grpo.py, Debian python3-torch), one after the
# other in this invocation, on the same machine. Prints one JSON object per
# line: {"system": "cohort"|"reference", "seed", "grpo_seconds",
# "accuracy_before", "accuracy_after", "gain", ...} and a final
# {"system": "ratio", "wall_time_ratio" (reference / cohort),
# "gain_ratio" (cohort / reference)}.
# Usage: bench/quickstart_vs_reference.sh [SEED]   (build first: scripts/build.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
SEED=${1:-0}
BUILD_DIR=${COHORT_BUILD_DIR:-build}
REF=${COHORT_REFERENCE:-../shared/reference/tiny_grpo.py}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

"$BUILD_DIR/learner/cohort-pipeline" --config configs/quickstart.yaml --out "$WORK/cohort" \
  --set run.seed="$SEED" >"$WORK/cohort.log" 2>&1
python3 - "$WORK/cohort/summary.json" "$SEED" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
rl = [st for st in s["stages"] if st["kind"] == "grpo"][-1]
b, a = rl["eval_before"]["accuracy"], rl["eval_after"]["accuracy"]
print(json.dumps({"system": "cohort", "seed": int(sys.argv[2]), "grpo_seconds": rl["duration_s"],
                  "grpo_steps": rl["steps"], "accuracy_before": b, "accuracy_after": a,
                  "gain": a - b,
                  "tokens_per_s_generated": rl.get("tokens_per_s_generated"),
                  "generate_seconds": rl.get("generate_seconds"),
                  "train_seconds": rl.get("train_seconds"),
                  "run_seconds": sum(st["duration_s"] for st in s["stages"])}))
PY
if [[ ! -f "$REF" ]] || ! /usr/bin/python3 -c "import torch" 2>/dev/null; then
  echo '{"system": "reference", "skipped": "needs '"$REF"' and Debian python3-torch"}'
  exit 0
fi
/usr/bin/python3 "$REF" --seed "$SEED" --out "$WORK/ref.json" >"$WORK/ref.log" 2>&1
python3 - "$WORK/ref.json" "$WORK/cohort/summary.json" "$SEED" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
hist = r["grpo_history"]
b, a = r["sft_acc"], hist[-1]["eval_acc"]
ref = {"system": "reference", "seed": int(sys.argv[3]), "grpo_seconds": r["perf"]["total"],
       "accuracy_before": b, "accuracy_after": a, "gain": a - b,
       "tokens_per_s_generated": r["perf"]["gen_tok_s"],
       "tokens_per_s_trained": r["perf"]["learn_tok_s"],
       "run_seconds": r["total_time"]}
print(json.dumps(ref))
s = json.load(open(sys.argv[2]))
rl = [st for st in s["stages"] if st["kind"] == "grpo"][-1]
gain = rl["eval_after"]["accuracy"] - rl["eval_before"]["accuracy"]
print(json.dumps({"system": "ratio", "wall_time_ratio": ref["grpo_seconds"] / rl["duration_s"],
                  "gain_ratio": gain / ref["gain"] if ref["gain"] else None}))
PY
