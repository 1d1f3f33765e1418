#!/bin/sh
# Make sure a headless Chromium and its WebDriver are available for the pages' browser tests.
# Installs Debian's `chromium` and `chromium-driver` packages (built together, so their versions
# match) when either is missing and apt-get is usable (as root, or through passwordless sudo).
# Never fails the build: when it cannot install, it says why and exits 0, and the browser tests
# then skip with that reason.
set -u

have_browser() {
    for candidate in chromium chromium-browser google-chrome; do
        if command -v "$candidate" >/dev/null 2>&1; then
            return 0
        fi
    done
    [ -x /usr/bin/chromium ]
}

if have_browser && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-chromium: apt-get not found; the browser tests will be skipped" >&2
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "ensure-chromium: not root and no passwordless sudo; cannot install chromium and chromium-driver" \
         "(the browser tests will be skipped)" >&2
    exit 0
fi

echo "ensure-chromium: installing Debian's chromium and chromium-driver packages (once)" >&2
export DEBIAN_FRONTEND=noninteractive
if $SUDO apt-get update -qq >/dev/null 2>&1 &&
   $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null 2>&1; then
    echo "ensure-chromium: installed $(/usr/bin/chromium --version 2>/dev/null)" \
         "and $(chromedriver --version 2>/dev/null | cut -d' ' -f1-2)" >&2
else
    echo "ensure-chromium: apt-get could not install chromium and chromium-driver (offline?); the browser" \
         "tests will be skipped" >&2
fi
exit 0
