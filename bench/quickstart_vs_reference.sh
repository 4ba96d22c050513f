#!/usr/bin/env bash
# The quickstart against the single-process PyTorch reference
# (../shared/reference/tiny_grpo.py, Debian python3-torch), one after the
# other in this invocation, on the same machine: the same recipe (2-digit
# addition, a cold-start SFT (cohort: 140 demonstrations x 600 steps from
# one initial model for every seed, model.init_seed 5; the reference: 100 x
# 300 from a model seeded by --seed), then GRPO with 16 prompts x G 8
# (cohort: 250 steps, the reference: 300)). Prints one JSON object per line:
#   {"system": "cohort"|"reference", "seed", "grpo_seconds", "grpo_steps",
#    "accuracy_before", "accuracy_after", "gain", "tokens_per_s_generated",
#    "tokens_per_s_trained", "generate_fraction", "train_fraction",
#    "run_seconds", "cpu_seconds", "load_average"}
# and a final {"system": "ratio", "wall_time_ratio" (reference / cohort GRPO
# seconds), "gain_ratio" (cohort / reference gain), "cpu_ratio" (reference /
# cohort CPU seconds of the whole run), "seconds_to_reference_gain" (from
# the start of cohort's GRPO stage to its first held-out eval at least the
# reference's whole gain above the cold start, evals included; null if none
# is), "time_to_reference_gain_ratio" (that / the reference's GRPO seconds:
# the issue's goal beyond is <= 0.5)}. The eval spacing bounds how early
# that can be seen: COHORT_BENCH_EVAL_EVERY=N evaluates every N GRPO steps
# (the config's eval.eval_every otherwise; each eval costs about 2 s). generate_fraction / train_fraction:
# the shares of the GRPO stage's wall time spent generating and training (the
# rest is held-out evaluation); in one process they alternate, so the
# learner's idle fraction is generate_fraction.
# Usage: bench/quickstart_vs_reference.sh [SEED] [COHORT_RUNNER]
#   SEED           run.seed of cohort and --seed of the reference (default 1)
#   COHORT_RUNNER  pipeline (cohort-pipeline, one process; default) or
#                  cluster (cohort run: learner, reward server, 2 actors)
# Environment: COHORT_BUILD_DIR (default build), COHORT_REFERENCE,
# COHORT_BENCH_KEEP=DIR keeps both runs' outputs in DIR,
# COHORT_BENCH_EVAL_EVERY (above).
set -euo pipefail
cd "$(dirname "$0")/.."
SEED=${1:-1}
RUNNER=${2:-pipeline}
BUILD_DIR=${COHORT_BUILD_DIR:-build}
REF=${COHORT_REFERENCE:-../shared/reference/tiny_grpo.py}
if [[ -n "${COHORT_BENCH_KEEP:-}" ]]; then
  WORK=$COHORT_BENCH_KEEP
  mkdir -p "$WORK"
else
  WORK=$(mktemp -d)
  trap 'rm -rf "$WORK"' EXIT
fi
load() { cut -d' ' -f1-3 /proc/loadavg; }

LOAD_BEFORE=$(load)
case "$RUNNER" in
  pipeline)
    CMD=("$BUILD_DIR/learner/cohort-pipeline" --config configs/quickstart.yaml
         --out "$WORK/cohort" --set run.seed="$SEED") ;;
  cluster)
    CMD=("$BUILD_DIR/cli/cohort" run configs/quickstart.yaml --out "$WORK/cohort"
         --set run.seed="$SEED") ;;
  *) echo "unknown runner '$RUNNER' (pipeline | cluster)" >&2; exit 2 ;;
esac
if [[ -n "${COHORT_BENCH_EVAL_EVERY:-}" ]]; then
  CMD+=(--set eval.eval_every="$COHORT_BENCH_EVAL_EVERY")
fi
rm -rf "$WORK/cohort"
/usr/bin/time -f '%U %S %e' -o "$WORK/cohort.time" "${CMD[@]}" >"$WORK/cohort.log" 2>&1 || {
  echo "cohort failed; its log:" >&2; tail -20 "$WORK/cohort.log" >&2; exit 1; }
LOAD_AFTER=$(load)
python3 - "$WORK" "$SEED" "$RUNNER" "$LOAD_BEFORE" "$LOAD_AFTER" <<'PY' > "$WORK/cohort.json"
import json, os, sys
work, seed, runner, lb, la = sys.argv[1:6]
s = json.load(open(os.path.join(work, "cohort/summary.json")))
rl = [st for st in s["stages"] if st["kind"] == "grpo"][-1]
b, a = rl["eval_before"]["accuracy"], rl["eval_after"]["accuracy"]
trained = 0.0
mpath = os.path.join(work, "cohort/metrics.jsonl")
if os.path.exists(mpath):
    for line in open(mpath):
        m = json.loads(line)
        if m.get("stage") == rl["name"]:
            trained += m.get("tokens", 0.0)
user, sys_, wall = (float(x) for x in open(os.path.join(work, "cohort.time")).read().split())
dur = rl["duration_s"]
gen_s, train_s = rl.get("generate_seconds"), rl.get("train_seconds")
print(json.dumps({
    "system": "cohort", "runner": runner, "seed": int(seed), "grpo_seconds": dur,
    "grpo_steps": rl["steps"], "accuracy_before": b, "accuracy_after": a, "gain": a - b,
    "sampled_before": rl["eval_before"].get("sampled_accuracy"),
    "sampled_after": rl["eval_after"].get("sampled_accuracy"),
    "tokens_per_s_generated": rl.get("tokens_per_s_generated"),
    "tokens_per_s_trained": trained / train_s if train_s else None,
    "generate_fraction": gen_s / dur if gen_s is not None and dur else None,
    "train_fraction": train_s / dur if train_s is not None and dur else None,
    "run_seconds": wall, "cpu_seconds": user + sys_,
    "load_average": {"before": lb, "after": la}}))
PY
cat "$WORK/cohort.json"

if [[ ! -f "$REF" ]] || ! /usr/bin/python3 -c "import torch" 2>/dev/null; then
  echo '{"system": "reference", "skipped": "needs '"$REF"' and Debian python3-torch"}'
  exit 0
fi
LOAD_BEFORE=$(load)
/usr/bin/time -f '%U %S %e' -o "$WORK/ref.time" \
  /usr/bin/python3 "$REF" --seed "$SEED" --out "$WORK/ref.json" >"$WORK/ref.log" 2>&1
LOAD_AFTER=$(load)
python3 - "$WORK" "$SEED" "$LOAD_BEFORE" "$LOAD_AFTER" <<'PY'
import json, os, sys
work, seed, lb, la = sys.argv[1:5]
r = json.load(open(os.path.join(work, "ref.json")))
hist, perf = r["grpo_history"], r["perf"]
b, a = r["sft_acc"], hist[-1]["eval_acc"]
user, sys_, wall = (float(x) for x in open(os.path.join(work, "ref.time")).read().split())
ref = {"system": "reference", "seed": int(seed), "grpo_seconds": perf["total"],
       "grpo_steps": hist[-1]["step"], "accuracy_before": b, "accuracy_after": a, "gain": a - b,
       "sampled_before": hist[0].get("eval_sample_acc"),
       "sampled_after": hist[-1].get("eval_sample_acc"),
       "tokens_per_s_generated": perf["gen_tok_s"], "tokens_per_s_trained": perf["learn_tok_s"],
       "generate_fraction": perf["gen_time"] / perf["total"],
       "train_fraction": perf["learn_time"] / perf["total"],
       "run_seconds": wall, "cpu_seconds": user + sys_,
       "load_average": {"before": lb, "after": la}}
print(json.dumps(ref))
c = json.load(open(os.path.join(work, "cohort.json")))
# cohort's first held-out eval of the GRPO stage at least the reference's
# gain above the cold start, timed from the stage's "before" eval.
s = json.load(open(os.path.join(work, "cohort/summary.json")))
rl = [st for st in s["stages"] if st["kind"] == "grpo"][-1]
evals = [json.loads(l) for l in open(os.path.join(work, "cohort/evals.jsonl"))]
evals = [e for e in evals if e.get("stage") == rl["name"] and e.get("dataset", "eval") == "eval"]
start = [e["time_s"] for e in evals if e.get("when") == "before"]
to_gain = None
if start:
    for e in sorted((e for e in evals if e.get("when") != "before"), key=lambda e: e["step"]):
        if e["accuracy"] - c["accuracy_before"] >= ref["gain"] - 1e-9:
            to_gain = e["time_s"] - start[0]
            break
print(json.dumps({"system": "ratio", "wall_time_ratio": ref["grpo_seconds"] / c["grpo_seconds"],
                  "gain_ratio": c["gain"] / ref["gain"] if ref["gain"] else None,
                  "cpu_ratio": ref["cpu_seconds"] / c["cpu_seconds"],
                  "seconds_to_reference_gain": to_gain,
                  "time_to_reference_gain_ratio":
                      to_gain / ref["grpo_seconds"] if to_gain is not None else None}))
PY
