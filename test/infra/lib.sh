#!/usr/bin/env bash
# Shared helpers for the real-stack build scripts: cache location, pinned versions, tool checks.
set -euo pipefail

CRBRIDGE_CACHE="${CRBRIDGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/crbridge}"
KUBE_VERSION="${KUBE_VERSION:-v1.36.3}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
JAEGER_MODULE_VERSION="${JAEGER_MODULE_VERSION:-v1.76.0}"   # = Jaeger v2.13.0
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
KAFKA_VERSION="${KAFKA_VERSION:-4.1.1}"
LOG4J_VERSION="${LOG4J_VERSION:-2.25.3}"
export GOFLAGS="${GOFLAGS:--mod=mod}"
export GOTOOLCHAIN=local

log() { printf '[infra %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'crbridge stack: %s\n' "$*" >&2; exit 1; }

# require TOOL HOW: one clear line when a toolchain is missing.
require() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' is not installed; $2"
}

# run_logged LOGFILE CMD...: run a build step, keep its output in a log, name the log on failure.
# While it runs, a progress line every 30 s says how long it has taken and how far the log got
# (`go build -v` writes one line per compiled package).
run_logged() {
  local logfile=$1; shift
  local start=$SECONDS next=30
  "$@" >>"$logfile" 2>&1 &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    if (( SECONDS - start >= next )); then
      log "  ... ${1##*/} ${2:-} still running: $((SECONDS - start)) s, $(wc -l <"$logfile") log lines ($logfile)"
      next=$((next + 30))
    fi
  done
  if ! wait "$pid"; then
    tail -n 20 "$logfile" >&2 || true
    die "build step failed: $* (full log: $logfile)"
  fi
}

# go_major_ok: the Go toolchain must be at least 1.26 (kubernetes 1.36 declares go 1.26.0).
go_check() {
  require go "install Go >= 1.26 (https://go.dev/dl or 'apt-get install golang-1.26')"
  local v; v=$(go env GOVERSION | sed 's/^go//')
  case "$v" in 1.2[6-9]*|1.[3-9][0-9]*) ;; *) die "Go $v is too old; Go >= 1.26 is needed to build kube-apiserver $KUBE_VERSION";; esac
}
