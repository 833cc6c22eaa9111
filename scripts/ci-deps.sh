#!/bin/sh
# Installs the Debian packages nvhook's build, demo and tests need (as root), and
# checks for a Rust toolchain. Idempotent: installs only what is missing.
set -eu
pkgs="runc busybox-static gcc g++ gcc-multilib libc6-dev util-linux mount coreutils procps podman docker.io containerd patch python3-jsonschema"
missing=
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    [ "$(id -u)" = 0 ] || { echo "ci-deps: need root to install:$missing" >&2; exit 1; }
    echo "ci-deps: installing$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "ci-deps: cargo not found; install Rust stable (https://rustup.rs), 1.82 or newer" >&2
    exit 1
fi
