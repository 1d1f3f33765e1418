#!/bin/sh
# Make sure a headless Chromium is available for the report page's browser test.
# Installs Debian's `chromium` package when /usr/bin/chromium is missing and apt-get is usable
# (as root, or through passwordless sudo). Never fails the build: when it cannot install, it says
# why and exits 0, and the browser test then skips with that reason.
set -u

if [ -x /usr/bin/chromium ]; then
    exit 0
fi
for candidate in chromium chromium-browser google-chrome; do
    if command -v "$candidate" >/dev/null 2>&1; then
        exit 0
    fi
done

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-chromium: apt-get not found; the report's browser test will be skipped" >&2
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "ensure-chromium: not root and no passwordless sudo; cannot install chromium" \
         "(the report's browser test will be skipped)" >&2
    exit 0
fi

echo "ensure-chromium: installing Debian's chromium package (once)" >&2
export DEBIAN_FRONTEND=noninteractive
if $SUDO apt-get update -qq >/dev/null 2>&1 &&
   $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; then
    echo "ensure-chromium: installed $(/usr/bin/chromium --version 2>/dev/null)" >&2
else
    echo "ensure-chromium: apt-get could not install chromium (offline?); the report's browser test" \
         "will be skipped" >&2
fi
exit 0
