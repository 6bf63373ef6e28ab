#!/usr/bin/env bash
# Builds or fetches every part of the local real stack, one after the other, with progress and timings.
# Usage: test/infra/build-all.sh   (each step returns at once when its cache folder is complete)
source "$(dirname "$0")/lib.sh"
here=$(dirname "$0")
total_start=$(date +%s)
for step in build-etcd.sh build-kube.sh build-jaeger.sh build-helm.sh fetch-kafka.sh ensure-kcat.sh; do
  start=$(date +%s)
  dir=$("$here/$step")
  log "$step: $dir ($(( $(date +%s) - start )) s)"
done
log "all built in $(( $(date +%s) - total_start )) s (cache: $CRBRIDGE_CACHE)"
