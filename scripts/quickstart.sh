#!/usr/bin/env bash
# Sets up, builds and runs the main job: the quickstart training run
# (configs/quickstart.yaml): the built-in 2-digit addition task, a tiny
# model initialised from scratch, cold-start SFT on 140 demonstrations, then
# 250 GRPO steps with accuracy + format rewards, held-out evals before/after
# each stage and every 100 GRPO steps. Outputs in out/quickstart/:
# summary.json, report.html, metrics.jsonl, evals.jsonl, tensorboard/, data/,
# model/ (the final model as a Hugging Face directory), plus trained.jsonl
# (the exactly-once ledger) and every role's log.
#
# The run goes through the local cluster: `cohort run` starts a learner, a
# reward server and two actors as processes on 127.0.0.1; the learner runs
# the SFT stage and the evals itself and the GRPO stage through leases to
# the actors, and everything exits 0 when the pipeline is done. Rerunning
# resumes an unfinished run (or says the run is finished).
# Usage: scripts/quickstart.sh [extra flags, e.g. --set run.seed=2 --new]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${COHORT_BUILD_DIR:-build}
echo "quickstart: installing dependencies (scripts/setup.sh)"
scripts/setup.sh
echo "quickstart: building into $BUILD_DIR/ (scripts/build.sh)"
COHORT_BUILD_DIR=$BUILD_DIR scripts/build.sh
OUT=${COHORT_QUICKSTART_OUT:-out/quickstart}
echo "quickstart: training; outputs in $OUT/"
status=0
"$BUILD_DIR/cli/cohort" run configs/quickstart.yaml --out "$OUT" "$@" || status=$?
if [[ $status -eq 0 ]]; then
  echo "quickstart: done. Held-out greedy accuracy per stage (before -> after):"
  python3 - "$OUT/summary.json" <<'PY' || true
import json, sys
s = json.load(open(sys.argv[1]))
for st in s["stages"]:
    b, a = st.get("eval_before", {}), st.get("eval_after", {})
    print(f"  {st['name']:12s} {st['kind']:5s} {b.get('accuracy', 0):.3f} -> {a.get('accuracy', 0):.3f}"
          f"  ({st.get('duration_s', 0):.0f} s)")
PY
  echo "quickstart: report: $OUT/report.html; model: $OUT/model"
fi
exit "$status"
