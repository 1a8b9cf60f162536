#!/usr/bin/env bash
# Install headless Chromium and its WebDriver for the console's browser tests
# (tests/test_console.py, marker "browser"), from Debian's own packages.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
else
    SUDO=
fi
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends chromium chromium-driver
chromium --version
chromedriver --version
