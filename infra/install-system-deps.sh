#!/usr/bin/env bash
# Installs the Debian packages whose servers/tools the demo and tests start.
# Idempotent and quiet when everything is present. Needs root (CI and dev machines run as root).
set -euo pipefail
needed=()
command -v prometheus-alertmanager >/dev/null 2>&1 || needed+=(prometheus-alertmanager)
command -v amtool >/dev/null 2>&1 || needed+=(prometheus-alertmanager)
command -v prometheus >/dev/null 2>&1 || needed+=(prometheus)  # started by infra/prometheus, not its systemd unit
command -v promtool >/dev/null 2>&1 || needed+=(prometheus)
command -v pdftoppm >/dev/null 2>&1 || needed+=(poppler-utils)
command -v chromium >/dev/null 2>&1 || needed+=(chromium chromium-driver)
command -v softhsm2-util >/dev/null 2>&1 || needed+=(softhsm2)
if [ ${#needed[@]} -gt 0 ]; then
  echo "installing Debian packages: ${needed[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${needed[@]}" >/dev/null
fi
# Stripe's official mock server (a Go module), for the Stripe adapter test.
STRIPE_MOCK_VERSION=v0.203.0
if ! command -v stripe-mock >/dev/null 2>&1 && [ ! -x "$(go env GOPATH 2>/dev/null)/bin/stripe-mock" ]; then
  if command -v go >/dev/null 2>&1; then
    echo "installing stripe-mock ${STRIPE_MOCK_VERSION} (go install)"
    go install "github.com/stripe/stripe-mock@${STRIPE_MOCK_VERSION}" || echo "stripe-mock could not be installed; its test will skip"
  fi
fi
