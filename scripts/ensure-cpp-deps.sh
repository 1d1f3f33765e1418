#!/bin/sh
# Make sure the C++ port (cpp/) can be built: a C++17 compiler, cmake, and Debian's header
# packages for Eigen (the reference loops' products), OpenBLAS (the kernels' products), nlohmann/json (the safetensors header), doctest (the tests),
# zlib (gzip-compressed IDX files) and stb (stb_image: PNG and JPEG for predict). Installs the missing packages with apt-get (as root, or
# through passwordless sudo), quietly and non-interactively.
# Exits 0 when everything is there (or was installed); exits 1, saying why, only when something
# the build needs is still missing afterwards.
set -u

missing=""
need() {  # need PACKAGE FILE: PACKAGE is wanted unless FILE exists
    [ -e "$2" ] || missing="$missing $1"
}
command -v cmake >/dev/null 2>&1 || missing="$missing cmake"
command -v c++ >/dev/null 2>&1 || missing="$missing g++"
need libeigen3-dev /usr/include/eigen3/Eigen/Dense
need nlohmann-json3-dev /usr/include/nlohmann/json.hpp
need doctest-dev /usr/include/doctest/doctest.h
need zlib1g-dev /usr/include/zlib.h
need libstb-dev /usr/include/stb/stb_image.h
# OpenBLAS: the kernels' matrix products (cblas.h under the multiarch include folder)
[ -n "$(ls /usr/include/*/cblas.h /usr/include/cblas.h 2>/dev/null)" ] || missing="$missing libopenblas-dev"

[ -z "$missing" ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-cpp-deps: missing$missing and apt-get not found; install them to build cpp/" >&2
    exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "ensure-cpp-deps: missing$missing; not root and no passwordless sudo, so cannot apt-get install them" >&2
    exit 1
fi

echo "ensure-cpp-deps: installing Debian packages:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086  # word splitting of the package list is wanted
if ! $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null 2>&1; then
    $SUDO apt-get update -qq >/dev/null 2>&1
    if ! $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null 2>&1; then
        echo "ensure-cpp-deps: apt-get could not install$missing (offline?); cannot build cpp/" >&2
        exit 1
    fi
fi
echo "ensure-cpp-deps: installed$missing" >&2
exit 0
