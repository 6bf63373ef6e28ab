#!/usr/bin/env bash
# Builds kube-apiserver and kubectl from the Go module k8s.io/kubernetes at a pinned release,
# in a module of its own under the cache (staging modules replaced by their published versions).
# Usage: build-kube.sh   -> prints the bin folder; idempotent (skips when the binaries exist).
source "$(dirname "$0")/lib.sh"
out="$CRBRIDGE_CACHE/kube-$KUBE_VERSION"
if [[ -x "$out/bin/kube-apiserver" && -x "$out/bin/kubectl" ]]; then echo "$out/bin"; exit 0; fi
go_check
mkdir -p "$out/src" "$out/bin"
cd "$out/src"
logf="$out/build.log"; : >"$logf"
log "kube $KUBE_VERSION: resolving staging modules (log: $logf)"
if [[ ! -f go.mod ]]; then
  run_logged "$logf" go mod init crbridge.local/kubebuild
fi
# The staging modules are listed in the release's own go.mod as ./staging replaces.
modfile=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" 2>>"$logf" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')  || true
[[ -f "$modfile" ]] || die "could not download k8s.io/kubernetes@$KUBE_VERSION from the Go module proxy (log: $logf)"
minor=$(echo "$KUBE_VERSION" | sed 's/^v1\./v0./')
grep -o 'k8s.io/[a-z0-9-]* => ./staging' "$modfile" | awk '{print $1}' | sort -u | while read -r m; do
  go mod edit -replace "$m=$m@$minor"
done
# Name the commands' packages (not just the module) so go.sum gets every module their imports
# need; with the module alone a fresh module cache misses entries (k8s.io/kubelet, k8s.io/metrics).
run_logged "$logf" go get "k8s.io/kubernetes/cmd/kube-apiserver@$KUBE_VERSION" "k8s.io/kubernetes/cmd/kubectl@$KUBE_VERSION"
pkgv=k8s.io/component-base/version; cgv=k8s.io/client-go/pkg/version
maj=1; min=$(echo "$KUBE_VERSION" | cut -d. -f2)
ld="-s -w"
for p in $pkgv $cgv; do
  ld="$ld -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=$maj -X $p.gitMinor=$min -X $p.gitTreeState=clean -X $p.buildDate=2026-01-01T00:00:00Z"
done
for cmd in kube-apiserver kubectl; do
  log "kube $KUBE_VERSION: building $cmd (cold: tens of minutes on 2 cores)"
  CGO_ENABLED=0 run_logged "$logf" go build -v -trimpath -tags selinux,notest -ldflags "$ld" -o "$out/bin/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
  mv "$out/bin/$cmd.tmp" "$out/bin/$cmd"
done
log "kube $KUBE_VERSION: done"
echo "$out/bin"
