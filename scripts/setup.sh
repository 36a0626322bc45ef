#!/usr/bin/env bash
# Installs what building Tern needs on a fresh Debian/Ubuntu machine, only when it is missing:
# liburing's headers and library (the io_uring shim links it), and the openssl command. Swift itself must be on PATH.
set -euo pipefail
if ! command -v swift >/dev/null 2>&1; then
    echo "setup: swift is not on PATH; install Swift 6 first (https://swift.org/install)" >&2
    exit 1
fi
need=()
[ -f /usr/include/liburing.h ] || need+=(liburing-dev)
# The openssl command makes the certificates of the client TLS tests (docs/security.md).
command -v openssl > /dev/null 2>&1 || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
    echo "setup: installing ${need[*]}"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
