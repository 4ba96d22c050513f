#!/usr/bin/env bash
# Installs every Debian package cohort needs. Non-interactive, idempotent,
# quiet unless something fails. Run as root or with sudo available.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build ccache clang lld libclang-rt-14-dev
  pkg-config git openssl libssl-dev python3 procps
  libtorch-dev libopenblas0-pthread
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libgtest-dev libgmock-dev libbenchmark-dev
  libyaml-cpp-dev nlohmann-json3-dev libcpp-httplib-dev
  libpcre2-dev libutf8proc-dev bubblewrap
  chromium python3-torch
  prometheus
)

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "setup.sh: must run as root (or have sudo) to install packages" >&2
    exit 1
  fi
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [[ ${#missing[@]} -gt 0 ]]; then
  echo "setup.sh: installing ${#missing[@]} packages: ${missing[*]}"
  log=$(mktemp)
  export DEBIAN_FRONTEND=noninteractive
  if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${missing[@]}"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "setup.sh: apt-get failed" >&2
    exit 1
  fi
  rm -f "$log"
fi

# Deploy checks and the network-namespace test: iproute2, helm, kubectl,
# kubernetes-models (into a cache outside the tree). Container image builds
# set COHORT_SKIP_DEPLOY_TOOLS=1.
if [[ "${COHORT_SKIP_DEPLOY_TOOLS:-0}" != 1 ]]; then
  "$(dirname "$0")/setup_deploy_tools.sh"
fi
