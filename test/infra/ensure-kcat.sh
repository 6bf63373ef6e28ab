#!/usr/bin/env bash
# Makes sure Debian's kcat (Kafka CLI consumer/producer) is installed; prints its path.
source "$(dirname "$0")/lib.sh"
if command -v kcat >/dev/null 2>&1; then command -v kcat; exit 0; fi
sudo=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null 2>&1 || die "'kcat' is not installed; run 'apt-get install -y kcat' as root"
  sudo="sudo -n"
fi
require apt-get "install kcat with your package manager (Debian/Ubuntu package 'kcat')"
log "kcat: installing the Debian package"
logf="${CRBRIDGE_CACHE}/kcat-install.log"; mkdir -p "$CRBRIDGE_CACHE"; : >"$logf"
if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y kcat >>"$logf" 2>&1; then
  DEBIAN_FRONTEND=noninteractive $sudo apt-get update >>"$logf" 2>&1 || true
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y kcat >>"$logf" 2>&1 \
    || die "'kcat' is not installed and 'apt-get install -y kcat' failed (log: $logf)"
fi
command -v kcat
