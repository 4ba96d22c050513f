#!/usr/bin/env bash
# Sets up, builds and runs the main job: the quickstart local cluster (one
# learner, one reward server, two actors) for 20 seconds, then stops it
# cleanly. Training is not wired in yet; when it is, this runs the
# quickstart training run instead.
# Usage: scripts/quickstart.sh [extra `cohort run` flags, e.g. --for 1m]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${COHORT_BUILD_DIR:-build}
echo "quickstart: installing dependencies (scripts/setup.sh)"
scripts/setup.sh
echo "quickstart: building into $BUILD_DIR/ (scripts/build.sh)"
COHORT_BUILD_DIR=$BUILD_DIR scripts/build.sh
OUT=out/quickstart
echo "quickstart: starting the local cluster; role logs in $OUT/"
status=0
"$BUILD_DIR/cli/cohort" run configs/quickstart.yaml --out "$OUT" --for 20s "$@" || status=$?
echo "quickstart: cohort run exited with $status; role logs:"
ls -1 "$OUT"/*.log 2>/dev/null | sed 's/^/  /'
exit "$status"
