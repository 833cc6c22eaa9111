#!/bin/sh
# Installs the Debian packages nvhook's build, demo and tests need (as root), and
# checks for a Rust toolchain. Idempotent: installs only what is missing.
set -eu
pkgs="runc busybox-static gcc g++ libc6-dev util-linux mount coreutils procps podman docker.io containerd patch python3-jsonschema uidmap"
install_missing() {
    missing=
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
    done
    [ -n "$missing" ] || return 0
    [ "$(id -u)" = 0 ] || { echo "ci-deps: need root to install:$missing" >&2; exit 1; }
    echo "ci-deps: installing$missing"
    apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
}
# shellcheck disable=SC2086
install_missing $pkgs
# gcc -m32 (the synthetic driver's i386 libraries) needs only gcc's 32-bit support
# libraries and i386 glibc: not gcc-multilib, which Debian makes conflict with the
# arm64 cross compiler (scripts/arm64.sh).
install_missing "lib32gcc-$(gcc -dumpversion | cut -d. -f1)-dev" libc6-dev-i386
# The rootless tests (tests/e2e_rootless.rs) run Podman as this unprivileged user,
# with subordinate ids for its user namespace.
rootless_user=nvhook-rootless
if [ "$(id -u)" = 0 ]; then
    id "$rootless_user" >/dev/null 2>&1 || useradd --create-home --shell /bin/sh "$rootless_user"
    grep -q "^$rootless_user:" /etc/subuid 2>/dev/null || usermod --add-subuids 300000-365535 "$rootless_user"
    grep -q "^$rootless_user:" /etc/subgid 2>/dev/null || usermod --add-subgids 300000-365535 "$rootless_user"
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "ci-deps: cargo not found; install Rust stable (https://rustup.rs), 1.82 or newer" >&2
    exit 1
fi
