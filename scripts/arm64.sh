#!/bin/sh
# nvhook for arm64 hosts (Grace: GH200, GB200/GB300, DGX Spark), built and tested on an
# x86-64 Debian 12 machine: a cross build with Debian's own Rust (its rustc has the
# aarch64 standard library; rustup's toolchain on PATH has not), arm64 programs run
# through qemu-user (binfmt_misc), and a whole arm64 host booted by qemu-system-aarch64.
#
#   scripts/arm64.sh deps     install the toolchain and emulators (root)
#   scripts/arm64.sh binfmt   mount binfmt_misc and register qemu-aarch64 (root)
#   scripts/arm64.sh tools    arm64 glibc's ldconfig and busybox, unpacked from Debian's
#                             packages into target/arm64-tools (for the tests)
#   scripts/arm64.sh build    target/aarch64-unknown-linux-gnu/release/{nvhook,nvhook-runtime}
#   scripts/arm64.sh unit     the library's unit tests under qemu-aarch64-static (the
#                             runner cargo is given), but those qemu-user cannot run
#   scripts/arm64.sh deb      target/debian/nvhook_<version>_arm64.deb
#   scripts/arm64.sh host     an arm64 Debian host booted in a VM (scripts/systemd-host,
#                             bookworm-arm64): the .deb installed and a GPU container run
#                             through it, every unit test, the loader-cache equivalence
#                             against arm64 glibc's ldconfig, a RHEL-style image through
#                             the shim and the hook, and the start's cost (emulated)
#   scripts/arm64.sh all      all of the above, in this order (what .ci/run runs)
set -eu
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-gnu
# Debian's cargo and rustc 1.96 (rustc-web): the versions of libstd-rust-web-dev:arm64;
# the cross linker, and qemu-user as the runner of test programs (no -L sysroot: the
# arm64 glibc is installed multiarch, libc6:arm64, and with -L qemu-user 7.2 spins
# forever in a test that starts a program); tests build libraries with the cross gcc.
# Set here, not in .cargo/config.toml: on an arm64 machine cargo would apply them to
# native builds too.
cargo_arm() {
    RUSTC=/usr/bin/rustc CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
        CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER=qemu-aarch64-static \
        NVHOOK_CC=aarch64-linux-gnu-gcc /usr/bin/cargo "$@"
}

deps() {
    pkgs="rustc-web cargo-web libstd-rust-web-dev:arm64 libc6:arm64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static qemu-system-arm qemu-utils binfmt-support debootstrap e2fsprogs binutils"
    missing=
    for p in $pkgs; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
    done
    [ -z "$missing" ] && return 0
    [ "$(id -u)" = 0 ] || { echo "arm64: need root to install:$missing" >&2; exit 1; }
    dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
    echo "arm64: installing$missing"
    apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

binfmt() {
    [ -d /proc/sys/fs/binfmt_misc ] || modprobe binfmt_misc 2>/dev/null || true
    [ -f /proc/sys/fs/binfmt_misc/register ] ||
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    [ -f /proc/sys/fs/binfmt_misc/qemu-aarch64 ] && return 0
    conf=/usr/lib/binfmt.d/qemu-aarch64.conf
    [ -f "$conf" ] || { echo "arm64: $conf missing (install qemu-user-static)" >&2; exit 1; }
    cat "$conf" >/proc/sys/fs/binfmt_misc/register
}

# Debian's arm64 ldconfig (static) and busybox (static), unpacked where tests find them.
tools() {
    t=target/arm64-tools
    [ -x "$t/sbin/ldconfig" ] && [ -x "$t/bin/busybox" ] && return 0
    rm -rf "$t.tmp"
    mkdir -p "$t.tmp/debs"
    (cd "$t.tmp/debs" && chmod 777 . && apt-get download libc-bin:arm64 busybox-static:arm64 >/dev/null)
    for d in "$t.tmp"/debs/*.deb; do dpkg-deb -x "$d" "$t.tmp/root"; done
    mkdir -p "$t.tmp/sbin" "$t.tmp/bin"
    cp "$t.tmp/root/sbin/ldconfig" "$t.tmp/sbin/ldconfig"
    cp "$t.tmp/root/bin/busybox" "$t.tmp/bin/busybox"
    rm -rf "$t.tmp/root" "$t.tmp/debs" "$t"
    mv "$t.tmp" "$t"
}

# Unit tests qemu-user (7.2) cannot run: they use what it does not emulate (openat2,
# bpf, fsopen and the new mount API, answered ENOSYS) or read the machine's own glibc
# files (its ldconfig, its /etc/ld.so.cache: x86-64 ones here). They run on the arm64
# host (`host`) with all the others.
KERNEL_TESTS="apply::bpf::tests::loads_without_log_and_names_the_verifiers_reason
apply::bpf::tests::the_rules_load_before_a_real_program
apply::bpf_cache::tests::a_directory_not_on_bpffs_is_refused
apply::bpf_cache::tests::a_full_cache_is_emptied_of_its_own_pins_only
apply::ldcache_stale::tests::conf_with_includes_comments_and_loops
apply::ldconfig::tests::refuses_script_and_untrusted_paths
apply::ldconfig::tests::static_detection
apply::tests::proc_view_holds_exactly_the_files
common::rootfs::tests::symlink_created_once
common::rootfs::tests::symlinks_stay_inside
common::rootfs::tests::wrong_types_named
container::image::tests::debian_and_rhel
container::image::tests::debian_version_link_to_host_is_not_followed_out
doctor::setup::tests::a_sealed_program_that_is_no_ldconfig_fails_in_the_sandbox
doctor::setup::tests::the_hosts_ldconfig_runs_in_its_sandbox
host::ldcache::tests::real_host_cache_parses
host::ldcache::tests::real_ldconfig_formats"

# The path of a test executable cross-built for arm64: test_exe --lib | --test NAME
test_exe() {
    e=$(cargo_arm test "$@" --target $target --no-run --message-format=json |
        grep -o '"executable":"[^"]*"' | tail -n1 | cut -d'"' -f4)
    [ -x "$e" ] || { echo "arm64: the tests ($*) did not build" >&2; exit 1; }
    echo "$e"
}

unit() {
    exe=$(test_exe --lib)
    # every name listed must still be a test: a renamed one must not slip out of both runs
    names=$(qemu-aarch64-static "$exe" --list | sed -n 's/: test$//p')
    skip=
    for t in $KERNEL_TESTS; do
        echo "$names" | grep -qx "$t" || { echo "arm64: KERNEL_TESTS names $t, which is no test" >&2; exit 1; }
        skip="$skip --skip $t"
    done
    echo "arm64 unit: $(echo "$KERNEL_TESTS" | wc -l) of $(echo "$names" | wc -l) tests skipped under qemu-user (they run on the arm64 host):"
    echo "$KERNEL_TESTS" | sed 's/^/  /'
    # cargo runs the arm64 test program through its runner (cargo_arm)
    # shellcheck disable=SC2086
    cargo_arm test --lib --target $target -q -- --exact $skip --test-threads=2
}

# The arm64 host: a payload for scripts/systemd-host/run-vm.sh bookworm-arm64.
host() {
    deps
    binfmt
    tools # the arm64 ldconfig that makes the cross-built driver's cache
    deb=$(scripts/package.sh --arch arm64 | tail -n1)
    unit_exe=$(test_exe --lib)
    equiv_exe=$(test_exe --test ldcache_equivalence)
    p=$(mktemp -d /tmp/nvhook-arm64.XXXXXX)
    trap 'rm -rf "$p"' EXIT
    cp scripts/systemd-host/payloads/arm64.sh "$p/run.sh"
    cp "$deb" "$p/"
    cp "$unit_exe" "$p/unit"
    cp "$equiv_exe" "$p/equiv"
    mkdir -p "$p/scripts"
    cp -a scripts/make-fake-driver.sh scripts/make-rootfs.sh scripts/package-test.sh scripts/fake "$p/scripts/"
    ARCH=arm64 scripts/make-fake-driver.sh "$p/driver" 2 >/dev/null
    out=${OUT:-/tmp/nvhook-vm-out}/arm64
    rm -rf "$out"
    mkdir -p "$(dirname "$out")"
    rc=0
    NVHOOK_VM_TIMEOUT=${NVHOOK_VM_TIMEOUT:-1500} NVHOOK_VM_QUIET=${NVHOOK_VM_QUIET:-1} \
        scripts/systemd-host/run-vm.sh bookworm-arm64 v2 "$p" "$out" >"$out.run" 2>&1 || rc=$?
    grep -E '^(==|RESULT|  )' "$out/log" 2>/dev/null || true
    if [ "$rc" != 0 ] || ! grep -q '^RESULT' "$out/log" 2>/dev/null; then
        echo "arm64 host: FAILED (exit $rc; $out)"
        tail -n 20 "$out.run"
        exit 1
    fi
}

build() {
    cargo_arm build --release --workspace --target $target -q
    for b in nvhook nvhook-runtime; do
        readelf -h target/$target/release/$b | grep -q 'Machine:.*AArch64' ||
            { echo "arm64: target/$target/release/$b is no aarch64 program" >&2; exit 1; }
    done
    echo "arm64: built $(qemu-aarch64-static target/$target/release/nvhook --version)"
}

case ${1:-all} in
deps) deps ;;
binfmt) binfmt ;;
tools) tools ;;
build) build ;;
unit) unit ;;
deb) scripts/package.sh --arch arm64 ;;
host) host ;;
all)
    deps
    binfmt
    tools
    build
    unit
    host
    ;;
*)
    echo "usage: arm64.sh deps|binfmt|tools|build|unit|deb|host|all" >&2
    exit 2
    ;;
esac
