#!/usr/bin/env sh
# Debian packages the test suite needs beyond Python: Chromium and its ChromeDriver, for the
# dashboard's browser tests. Installs them only when they are missing; needs root or sudo.
set -eu
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
echo "installing chromium and chromium-driver (Debian packages) for the browser tests..."
$SUDO apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null
