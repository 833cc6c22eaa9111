#!/bin/sh
# The systemd suite: payloads/engines.sh (runc and crun through the shim, Podman with
# hooks.d and with CDI, Docker and containerd after `nvhook install`, each on systemd's
# cgroup driver; a container given GPU 0 probed before and after two `systemctl
# daemon-reload`s) in the systemd test hosts. Fails if any VM or any result fails.
#
#   scripts/systemd-host/suite.sh [BIN_DIR] [DIST:CGROUP ...]
#     BIN_DIR   nvhook and nvhook-runtime (default target/release, built before)
#     default hosts: bookworm:v2 bookworm:v1 trixie:v2
# Output per host in $OUT (default /tmp/nvhook-vm-out)/engines-DIST-CGROUP. Needs root,
# gcc and busybox-static (make-fake-driver.sh, make-rootfs.sh); ENGINES narrows the set.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
scripts=$here/..
bin=${1:-$here/../../target/release}
[ $# -gt 0 ] && shift
hosts=${*:-bookworm:v2 bookworm:v1 trixie:v2}
out=${OUT:-/tmp/nvhook-vm-out}
p=$(mktemp -d /tmp/nvhook-payload.XXXXXX)
trap 'rm -rf "$p"' EXIT
cp "$here/payloads/engines.sh" "$p/run.sh"
[ -n "${ENGINES:-}" ] && sed -i "s/^ENGINES=.*/ENGINES=\"$ENGINES\"/" "$p/run.sh"
install -m 755 "$bin/nvhook" "$bin/nvhook-runtime" "$p/"
"$scripts/make-fake-driver.sh" "$p/driver" 2 >/dev/null
"$scripts/make-rootfs.sh" "$p/rootfs" debian >/dev/null
# GPU 1's node (195:0) and GPU 0's (195:1) in the image, outside the /dev the engines
# mount over it: a GPU the container did not ask for is there to be refused.
mkdir -p "$p/rootfs/gpu"
mknod -m 666 "$p/rootfs/gpu/nvidia0" c 195 0
mknod -m 666 "$p/rootfs/gpu/nvidia1" c 195 1
tar -C "$p/rootfs" -cf "$p/rootfs.tar" .
mkdir -p "$out"
fail=0
for h in $hosts; do
    dist=${h%%:*} cg=${h#*:}
    o=$out/engines-$dist-$cg
    rm -rf "$o"
    echo "==== systemd host $dist, cgroup $cg"
    # apparmor=0: the image has no apparmor_parser, and dockerd refuses to start
    # containers on a kernel with AppArmor on without it.
    NVHOOK_VM_APPEND="apparmor=0 ${NVHOOK_VM_APPEND:-}" NVHOOK_VM_TIMEOUT=${NVHOOK_VM_TIMEOUT:-900} NVHOOK_VM_QUIET=${NVHOOK_VM_QUIET:-1} "$here/run-vm.sh" "$dist" "$cg" "$p" "$o" >"$o.run" 2>&1 || rc=$?
    grep -E '^(==|RESULT|  )' "$o/log" 2>/dev/null || true
    if [ "${rc:-0}" != 0 ] || ! grep -q '^RESULT' "$o/log" 2>/dev/null; then
        echo "==== FAILED: $dist $cg (exit ${rc:-0}; $o)"
        tail -n 20 "$o.run"
        fail=1
    fi
    unset rc
done
exit $fail
