#!/usr/bin/env bash
# Builds etcd from its Go module (go.etcd.io/etcd/server/v3) into the cache; prints the bin folder.
source "$(dirname "$0")/lib.sh"
out="$CRBRIDGE_CACHE/etcd-$ETCD_VERSION"
if [[ -x "$out/bin/etcd" ]]; then echo "$out/bin"; exit 0; fi
go_check
mkdir -p "$out/src" "$out/bin"; cd "$out/src"
logf="$out/build.log"; : >"$logf"
log "etcd $ETCD_VERSION: building (log: $logf)"
[[ -f go.mod ]] || run_logged "$logf" go mod init crbridge.local/etcdbuild
run_logged "$logf" go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
CGO_ENABLED=0 run_logged "$logf" go build -v -trimpath -ldflags "-s -w" -o "$out/bin/etcd.tmp" go.etcd.io/etcd/server/v3
mv "$out/bin/etcd.tmp" "$out/bin/etcd"
log "etcd $ETCD_VERSION: done"
echo "$out/bin"
