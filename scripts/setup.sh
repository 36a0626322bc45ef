#!/usr/bin/env bash
# Installs what building Tern needs on a fresh Debian/Ubuntu machine, only when it is missing:
# liburing's headers and library (the io_uring shim links it). Swift itself must be on PATH.
set -euo pipefail
if ! command -v swift >/dev/null 2>&1; then
    echo "setup: swift is not on PATH; install Swift 6 first (https://swift.org/install)" >&2
    exit 1
fi
if [ ! -f /usr/include/liburing.h ]; then
    echo "setup: installing liburing-dev"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq liburing-dev
fi
