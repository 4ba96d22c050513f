#!/usr/bin/env bash
# Checks deploy/: the Helm chart and the Dockerfiles. Run by ctest
# (check_deploy) and by hand:
#   scripts/check_deploy.sh [--bin_dir build [--check_keys]]
#
# 1. helm lint --strict, default values and every deploy/helm/cohort/ci/*.yaml;
# 2. helm template of each; every rendered object validated against the
#    Kubernetes schemas (kubernetes-models) plus the restricted Pod Security
#    profile and cohort's probe rules (deploy/tools/validate.js);
# 3. wrong values fail at install time with a message naming the value
#    (values.schema.json and the chart's cross-field checks);
# 4. with --check_keys: the run config the chart renders passes
#    `cohort config check` (the chart only sets keys cohort knows), and every
#    flag the chart passes is in the binary's --help;
# 5. the Dockerfiles install with scripts/setup.sh and build with
#    scripts/build.sh, passing only CMake options that select what is built,
#    so images and tests cannot drift apart; with --bin_dir (a build tree),
#    deploy/docker/runtime-packages.sh finds a Debian package for every
#    library the built binaries link (the runtime image's package list).
# Tools come from scripts/setup_deploy_tools.sh. Without them the script
# skips (exit 77) unless COHORT_REQUIRE_DATA=1, when it fails.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN_DIR=""
CHECK_KEYS=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --bin_dir) BIN_DIR="$2"; shift 2 ;;
    --check_keys) CHECK_KEYS=1; shift ;;
    *) echo "check_deploy.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

if [[ -n "${COHORT_TOOLS_DIR:-}" ]]; then
  TOOLS="$COHORT_TOOLS_DIR"
elif [[ $(id -u) -eq 0 ]]; then
  TOOLS=/opt/cohort-tools
else
  TOOLS="$HOME/.cache/cohort-tools"
fi
HELM="$TOOLS/bin/helm"
export NODE_PATH="$TOOLS/node/node_modules"
if [[ ! -x "$HELM" || ! -d "$NODE_PATH/kubernetes-models" ]] || ! command -v node >/dev/null; then
  msg="helm or kubernetes-models not found under $TOOLS (run scripts/setup_deploy_tools.sh)"
  if [[ "${COHORT_REQUIRE_DATA:-0}" == 1 ]]; then
    echo "FAIL: $msg" >&2
    exit 1
  fi
  echo "SKIP: $msg"
  exit 77
fi

CHART=deploy/helm/cohort
VALIDATE=deploy/tools/validate.js
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
failures=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}
step() { echo "== $*"; }

# --- 1, 2: lint, render, validate -------------------------------------------
# name | values file ("" = defaults) | extra helm flags | validate.js flags
cases=(
  "default||--kube-version 1.30.0|--expect-kind StatefulSet --expect-kind NetworkPolicy --expect-kind PodDisruptionBudget"
  "cpu|deploy/k8s/cpu-values.yaml|--kube-version 1.30.0|"
  "gpu-nccl-tls|$CHART/ci/gpu-nccl-tls-values.yaml|--kube-version 1.33.0 --api-versions monitoring.coreos.com/v1/ServiceMonitor|--allow-sandbox --expect-kind ServiceMonitor --expect-kind HorizontalPodAutoscaler"
)
for c in "${cases[@]}"; do
  IFS='|' read -r name values helm_flags validate_flags <<<"$c"
  vflag=()
  [[ -n "$values" ]] && vflag=(-f "$values")
  step "helm lint --strict ($name)"
  if ! "$HELM" lint --strict "$CHART" "${vflag[@]}" >"$WORK/lint.log" 2>&1; then
    cat "$WORK/lint.log" >&2
    fail "helm lint --strict ($name)"
  fi
  step "helm template + schema validation ($name)"
  # shellcheck disable=SC2086
  if ! "$HELM" template cohort-ci "$CHART" --namespace train "${vflag[@]}" $helm_flags \
      >"$WORK/$name.yaml" 2>"$WORK/template.log"; then
    cat "$WORK/template.log" >&2
    fail "helm template ($name)"
    continue
  fi
  # shellcheck disable=SC2086
  if ! node "$VALIDATE" $validate_flags "$WORK/$name.yaml" >"$WORK/validate.log" 2>&1; then
    cat "$WORK/validate.log" >&2
    fail "rendered objects ($name)"
  else
    echo "   $(grep -c '^ok ' "$WORK/validate.log") objects valid"
  fi
  # The run config of the ConfigMap, for step 4.
  node -e '
    const yaml = require("js-yaml");
    const docs = yaml.loadAll(require("fs").readFileSync(process.argv[1], "utf8"));
    const cm = docs.find((d) => d && d.kind === "ConfigMap");
    process.stdout.write(cm.data["run.yaml"]);' "$WORK/$name.yaml" >"$WORK/$name.run.yaml"
done

# The validator itself must reject what it is meant to reject.
step "validate.js rejects bad manifests"
sed -e 's/readOnlyRootFilesystem: true/readOnlyRootFilesystem: false/' "$WORK/default.yaml" \
  >"$WORK/bad-rofs.yaml"
sed -e 's/containerPort: 9100/containerPort: "nine"/' "$WORK/default.yaml" >"$WORK/bad-port.yaml"
for bad in bad-rofs bad-port; do
  if node "$VALIDATE" "$WORK/$bad.yaml" >"$WORK/bad.log" 2>&1; then
    fail "validate.js accepted $bad.yaml"
  fi
done
if node "$VALIDATE" "$WORK/gpu-nccl-tls.yaml" >/dev/null 2>&1; then
  fail "validate.js accepted sandbox settings without --allow-sandbox"
fi

# Sandbox settings appear only when a code task is configured.
if grep -q 'procMount: Unmasked\|hostUsers: false' "$WORK/default.yaml"; then
  fail "the default values (no code task) render code-sandbox settings"
fi
"$HELM" template cohort-ci "$CHART" --set config.reward.tasks=null >"$WORK/notasks.yaml"
grep -q 'procMount: Unmasked' "$WORK/notasks.yaml" ||
  fail "config.reward.tasks absent (defaults include code) renders no sandbox settings"

# Grace periods fit the deadlines: supervisor.stop_timeout_seconds = drain
# 60 + 10; actor = 70 + margin 10; learner = checkpoint 120 + 70 + 10;
# reward = preStop 5 + 70 + 10.
grep -q 'stop_timeout_seconds: 70$' "$WORK/default.yaml" ||
  fail "supervisor.stop_timeout_seconds is not drain 60 + stopTimeoutSeconds 10"
for want in "actor 80" "learner 200" "reward 85"; do
  kind=${want% *}
  node -e '
    const yaml = require("js-yaml");
    const docs = yaml.loadAll(require("fs").readFileSync(process.argv[1], "utf8"));
    const w = docs.find((d) => d && d.spec && d.spec.template &&
        d.spec.template.metadata.labels["app.kubernetes.io/component"] === process.argv[2]);
    process.exit(w && w.spec.template.spec.terminationGracePeriodSeconds === +process.argv[3] ? 0 : 1);
  ' "$WORK/default.yaml" "$kind" "${want#* }" ||
    fail "$kind terminationGracePeriodSeconds is not ${want#* }"
done

# The examples under deploy/k8s/.
step "deploy/k8s examples"
if ! node "$VALIDATE" deploy/k8s/namespace.yaml deploy/k8s/alerts.yaml >"$WORK/k8s.log" 2>&1; then
  cat "$WORK/k8s.log" >&2
  fail "deploy/k8s/*.yaml do not validate"
fi
node -e 'const p = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  if (!p.defaultAction || !Array.isArray(p.syscalls)) process.exit(1);' \
  deploy/k8s/seccomp/cohort-sandbox.json || fail "deploy/k8s/seccomp/cohort-sandbox.json is not a seccomp profile"
if command -v promtool >/dev/null; then
  node -e '
    const yaml = require("js-yaml");
    const rule = yaml.load(require("fs").readFileSync(process.argv[1], "utf8"));
    process.stdout.write(yaml.dump({groups: rule.spec.groups}));' deploy/k8s/alerts.yaml \
    >"$WORK/rules.yaml"
  if ! promtool check rules "$WORK/rules.yaml" >"$WORK/rules.log" 2>&1; then
    cat "$WORK/rules.log" >&2
    fail "promtool check rules deploy/k8s/alerts.yaml"
  fi
elif [[ "${COHORT_REQUIRE_DATA:-0}" == 1 ]]; then
  fail "promtool not installed (Debian package prometheus)"
fi

# --- 3: wrong values fail with a message -------------------------------------
step "wrong values fail at install time"
expect_error() {  # expected-substring helm-args...
  local want="$1"
  shift
  if "$HELM" template cohort-ci "$CHART" "$@" >/dev/null 2>"$WORK/err.log"; then
    fail "helm template $* succeeded; expected an error about '$want'"
  elif ! grep -q -- "$want" "$WORK/err.log"; then
    cat "$WORK/err.log" >&2
    fail "helm template $*: error does not mention '$want'"
  fi
}
expect_error "/weights/transport" --set weights.transport=udp
expect_error "replcas" --set actor.replcas=3
expect_error "/actor/replicas" --set actor.replicas=-1
expect_error "/ports/metrics" --set ports.metrics=70000
expect_error "/metrics/serviceMonitor/enabled" --set metrics.serviceMonitor.enabled=sometimes
expect_error "tls.existingSecret" --set tls.generate=false
expect_error "actor.gpu" --set weights.transport=nccl --set learner.gpu=1 --set actor.gpu=0
expect_error "minReplicas" --set reward.autoscaling.enabled=true \
  --set reward.autoscaling.minReplicas=5 --set reward.autoscaling.maxReplicas=2

# --- 4: the rendered run config is valid for cohort ----------------------------
if [[ $CHECK_KEYS == 1 && -z "$BIN_DIR" ]]; then
  echo "check_deploy.sh: --check_keys needs --bin_dir" >&2
  exit 2
fi
if [[ $CHECK_KEYS == 1 ]]; then
  step "cohort config check of the rendered run configs"
  for c in "${cases[@]}"; do
    name=${c%%|*}
    if ! "$BIN_DIR/cli/cohort" config check "$WORK/$name.run.yaml" >"$WORK/check.log" 2>&1; then
      cat "$WORK/check.log" >&2
      fail "the run config rendered for '$name' does not pass cohort config check"
    fi
  done
fi

# --- 5: Dockerfiles -------------------------------------------------------------
step "Dockerfiles use scripts/setup.sh and scripts/build.sh"
# Options that select what is built (not how): allowed in images.
allowed='^-D(COHORT_TESTS|COHORT_BENCH|COHORT_FUZZ)=(ON|OFF)$'
grep -q 'scripts/build.sh' scripts/test.sh || fail "scripts/test.sh does not build with scripts/build.sh"
for df in deploy/docker/Dockerfile deploy/docker/Dockerfile.cuda; do
  [[ -f "$df" ]] || { fail "$df missing"; continue; }
  grep -q 'scripts/setup.sh' "$df" || fail "$df does not install with scripts/setup.sh"
  grep -q 'scripts/build.sh' "$df" || fail "$df does not build with scripts/build.sh"
  if grep -Eq '(^|[^/])\bcmake +(-S|-B|-G)' "$df"; then
    fail "$df configures cmake itself instead of through scripts/build.sh"
  fi
  grep -q '^USER [1-9]' "$df" || fail "$df does not run as a non-root user"
  # Every -D option given to build.sh: a build-selection option, or (CUDA
  # image only) the CUDA switch and where LibTorch/nvcc are.
  while read -r opt; do
    [[ "$opt" =~ $allowed ]] && continue
    if [[ "$df" == *cuda ]] &&
        [[ "$opt" =~ ^-D(COHORT_WITH_CUDA=ON|CMAKE_PREFIX_PATH=.*|CUDAToolkit_ROOT=.*)$ ]]; then
      continue
    fi
    fail "$df passes $opt, which the tests do not use (scripts/build.sh, scripts/test.sh)"
  done < <(tr -s ' \\\n' '\n' <"$df" | grep '^-D' || true)
  # The options build.sh itself sets are not overridden.
  if grep -Eq -- '-DCMAKE_BUILD_TYPE|-DCMAKE_(C|CXX)_COMPILER=' "$df"; then
    fail "$df overrides the build type or compiler that scripts/build.sh sets"
  fi
  for opt in COHORT_TESTS COHORT_BENCH COHORT_FUZZ COHORT_WITH_CUDA; do
    if grep -q -- "-D$opt=" "$df" && ! grep -q "option($opt " CMakeLists.txt; then
      fail "$df sets -D$opt, which CMakeLists.txt does not define"
    fi
  done
done
# Every metric the binaries register (GetCounter/GetGauge/GetHistogram
# with a literal name, and the trainer's per-step gauges
# cohort_learner_trainer_<metric>) has a row in docs/operations.md.
step "every metric is documented in docs/operations.md"
metrics=$( (perl -0777 -ne 'while (/Get(?:Counter|Gauge|Histogram)\(\s*"(cohort_[a-z0-9_]+)"/g) { print "$1\n" }' \
    $(git ls-files '*.cc' | grep -v -e '_test\.cc$' -e '^bench/' -e '_fuzz') ;
  grep -ohE 'metrics\["[a-z_]+"\]' learner/trainer.cc | sed 's/metrics\["\(.*\)"\]/cohort_learner_trainer_\1/') |
  sort -u)
undocumented=()
for m in $metrics; do grep -q "\`$m[\`{,]" docs/operations.md || undocumented+=("$m"); done
if [[ ${#undocumented[@]} -gt 0 ]]; then
  fail "docs/operations.md lacks a row for: ${undocumented[*]}"
else
  echo "   $(wc -w <<<"$metrics") metrics, each with its meaning"
fi

# `cohort` execs a sibling binary for each subcommand that needs LibTorch
# ({"name", nullptr, ...} in cli/main.cc): both images must carry it.
for sub in $(sed -n 's/^ *{"\([a-z-]*\)", nullptr,.*/\1/p' cli/main.cc); do
  for f in deploy/docker/Dockerfile deploy/docker/Dockerfile.cuda; do
    grep -q "/build/cli/cohort-$sub " "$f" || fail "$f does not copy cohort-$sub (cohort $sub execs it)"
  done
done
grep -q 'bubblewrap' deploy/docker/Dockerfile || fail "the CPU image lacks bubblewrap (code sandbox)"
grep -q 'python3' deploy/docker/Dockerfile || fail "the CPU image lacks python3 (code sandbox)"
grep -q 'COHORT_WITH_CUDA=ON' deploy/docker/Dockerfile.cuda || fail "Dockerfile.cuda does not build with CUDA"
grep -q 'ARG LIBTORCH_URL' deploy/docker/Dockerfile.cuda || fail "Dockerfile.cuda takes no LibTorch build argument"

if [[ -n "$BIN_DIR" ]]; then
  step "runtime packages of the built binaries"
  bins=()
  for b in cli/cohort cli/cohort-init-model cli/cohort-eval cli/cohort-export \
      learner/cohort-learner actor/cohort-actor reward_server/cohort-reward; do
    [[ -x "$BIN_DIR/$b" ]] && bins+=("$BIN_DIR/$b")
  done
  if [[ ${#bins[@]} -eq 0 ]]; then
    fail "no cohort binaries under $BIN_DIR"
  elif ! deploy/docker/runtime-packages.sh "${bins[@]}" >"$WORK/packages" 2>"$WORK/packages.err"; then
    cat "$WORK/packages.err" >&2
    fail "deploy/docker/runtime-packages.sh"
  elif ! grep -q '^libgrpc++' "$WORK/packages"; then
    fail "runtime packages lack gRPC: $(tr '\n' ' ' <"$WORK/packages")"
  else
    echo "   ${#bins[@]} binaries need $(wc -l <"$WORK/packages") Debian packages"
  fi
fi

if [[ $CHECK_KEYS == 1 ]]; then
  # Every flag the chart passes (container args, the readiness probe's
  # `cohort health`) is one the binary documents in --help.
  step "the chart's flags exist in the binaries"
  for c in "${cases[@]}"; do
    name=${c%%|*}
    node -e '
      const yaml = require("js-yaml");
      const docs = yaml.loadAll(require("fs").readFileSync(process.argv[1], "utf8"));
      const seen = new Set();
      for (const d of docs) {
        const spec = d && d.spec && d.spec.template && d.spec.template.spec;
        for (const c of (spec && spec.containers) || []) {
          const lines = [[...(c.command || []), ...(c.args || [])]];
          if (c.readinessProbe && c.readinessProbe.exec) lines.push(c.readinessProbe.exec.command);
          for (const argv of lines) {
            const prog = argv[0] === "cohort" ? `cohort ${argv[1]}` : argv[0];
            for (const a of argv.slice(1)) {
              if (!a.startsWith("--")) continue;
              const key = `${prog}\t${a.replace(/=.*/, "")}`;
              if (!seen.has(key)) { seen.add(key); console.log(key); }
            }
          }
        }
      }' "$WORK/$name.yaml"
  done | sort -u >"$WORK/flags"
  declare -A where=([cohort-learner]=learner [cohort-actor]=actor [cohort-reward]=reward_server)
  while IFS=$'\t' read -r prog flag; do
    if [[ "$prog" == cohort\ * ]]; then
      help=$("$BIN_DIR/cli/cohort" ${prog#cohort } --help 2>&1 || true)
    elif [[ -n "${where[$prog]:-}" && -x "$BIN_DIR/${where[$prog]}/$prog" ]]; then
      help=$("$BIN_DIR/${where[$prog]}/$prog" --help 2>&1 || true)
    else
      echo "   ($prog not built: its flags are not checked)"
      continue
    fi
    grep -q -- "$flag\b" <<<"$help" || fail "the chart passes $flag to $prog, whose --help does not list it"
  done <"$WORK/flags"
fi

if [[ $failures -gt 0 ]]; then
  echo "check_deploy.sh: $failures check(s) failed" >&2
  exit 1
fi
echo "check_deploy.sh: all checks passed"
