#!/usr/bin/env bash
# Builds Jaeger v2 (all-in-one) from github.com/jaegertracing/jaeger/cmd/jaeger into the cache.
source "$(dirname "$0")/lib.sh"
out="$CRBRIDGE_CACHE/jaeger-$JAEGER_MODULE_VERSION"
if [[ -x "$out/bin/jaeger" ]]; then echo "$out/bin"; exit 0; fi
go_check
mkdir -p "$out/src" "$out/bin"; cd "$out/src"
logf="$out/build.log"; : >"$logf"
log "jaeger (module $JAEGER_MODULE_VERSION): building (log: $logf)"
[[ -f go.mod ]] || run_logged "$logf" go mod init crbridge.local/jaegerbuild
run_logged "$logf" go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$JAEGER_MODULE_VERSION"
CGO_ENABLED=0 run_logged "$logf" go build -v -trimpath -ldflags "-s -w" -o "$out/bin/jaeger.tmp" github.com/jaegertracing/jaeger/cmd/jaeger
mv "$out/bin/jaeger.tmp" "$out/bin/jaeger"
log "jaeger: done"
echo "$out/bin"
