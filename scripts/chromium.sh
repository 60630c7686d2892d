#!/usr/bin/env bash
# Installs headless Chromium (Debian's `chromium` package) for the report's browser test,
# unless /usr/bin/chromium is already there. Needs root (or sudo) and the Debian archive.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    echo "chromium: $(/usr/bin/chromium --version 2>/dev/null || echo present)"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
echo "chromium: installing the Debian package (apt-get)..."
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends chromium fonts-dejavu-core
/usr/bin/chromium --version
