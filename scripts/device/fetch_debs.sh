#!/usr/bin/env bash
# Build machine (Debian bookworm, network): downloads the few Debian
# packages a model-only build needs into .debs/ (about 2 MB), for
# gpu_check.sh on a GPU machine that has no network and no package manager
# access. .debs/ is listed in .git/info/exclude so it never gets committed;
# the device run names it in `carry`.
#   abseil (headers + shared libraries), nlohmann-json (headers),
#   googletest + googlemock (static libraries, headers).
# Usage: scripts/device/fetch_debs.sh [DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR=${1:-.debs}
mkdir -p "$DIR"
grep -qxF "/$DIR/" .git/info/exclude 2>/dev/null || echo "/$DIR/" >> .git/info/exclude
(cd "$DIR" && apt-get download libabsl-dev libabsl20220623 nlohmann-json3-dev libgtest-dev \
  libgmock-dev 2>&1 | grep -v "^W: Download is performed unsandboxed" || true)
ls -la "$DIR"/*.deb
