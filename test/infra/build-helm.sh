#!/usr/bin/env bash
# Builds helm from helm.sh/helm/v3/cmd/helm into the cache, with the Kubernetes version it assumes
# for client-side rendering set to the stack's kube-apiserver version.
source "$(dirname "$0")/lib.sh"
out="$CRBRIDGE_CACHE/helm-$HELM_VERSION"
if [[ -x "$out/bin/helm" ]]; then echo "$out/bin"; exit 0; fi
go_check
mkdir -p "$out/src" "$out/bin"; cd "$out/src"
logf="$out/build.log"; : >"$logf"
log "helm $HELM_VERSION: building (log: $logf)"
[[ -f go.mod ]] || run_logged "$logf" go mod init crbridge.local/helmbuild
# The command's package, not just the module, so go.sum gets every module its imports need.
run_logged "$logf" go get "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
min=$(echo "$KUBE_VERSION" | cut -d. -f2)
ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$min"
CGO_ENABLED=0 run_logged "$logf" go build -v -trimpath -ldflags "$ld" -o "$out/bin/helm.tmp" helm.sh/helm/v3/cmd/helm
mv "$out/bin/helm.tmp" "$out/bin/helm"
log "helm: done"
echo "$out/bin"
