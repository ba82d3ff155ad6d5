#!/usr/bin/env bash
# Installs the Debian packages whose servers/tools the demo and tests start.
# Idempotent and quiet when everything is present. Needs root (CI and dev machines run as root).
set -euo pipefail
needed=()
command -v prometheus-alertmanager >/dev/null 2>&1 || needed+=(prometheus-alertmanager)
command -v amtool >/dev/null 2>&1 || needed+=(prometheus-alertmanager)
command -v pdftoppm >/dev/null 2>&1 || needed+=(poppler-utils)
command -v chromium >/dev/null 2>&1 || needed+=(chromium chromium-driver)
command -v softhsm2-util >/dev/null 2>&1 || needed+=(softhsm2)
if [ ${#needed[@]} -eq 0 ]; then exit 0; fi
echo "installing Debian packages: ${needed[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${needed[@]}" >/dev/null
