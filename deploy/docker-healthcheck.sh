#!/usr/bin/env bash
# Container health check: GET /healthz on the bridge's own port, healthy only on an HTTP 200.
# It uses bash's /dev/tcp, so the runtime image needs no curl or wget (fewer packages, nothing extra to patch).
# Docker runs it through HEALTHCHECK; Kubernetes ignores HEALTHCHECK and uses the probes in deploy/kubernetes.
set -euo pipefail

port="${CALLBRIDGE_PORT:-8080}"
exec 3<>"/dev/tcp/127.0.0.1/${port}"
printf 'GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3
status_line=""
IFS= read -r -t 3 status_line <&3 || true
exec 3<&-
case "$status_line" in
  "HTTP/1."[01]" 200 "*) exit 0 ;;
  *) echo "unhealthy: ${status_line:-no answer}" >&2; exit 1 ;;
esac
