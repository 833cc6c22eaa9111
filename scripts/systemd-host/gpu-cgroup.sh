#!/bin/sh
# Runs payloads/gpu-cgroup.sh in the systemd test host: a runc container given GPU 0
# of the synthetic driver through nvhook-runtime, with the systemd and the cgroupfs
# cgroup drivers, probed before and after `systemctl daemon-reload`.
#
#   scripts/systemd-host/gpu-cgroup.sh DIST CGROUP [BIN_DIR]   # BIN_DIR: target/release
# Needs root, gcc and busybox-static (for make-fake-driver.sh and make-rootfs.sh).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
scripts=$here/..
dist=${1:?usage: gpu-cgroup.sh DIST CGROUP [BIN_DIR]}
cg=${2:?usage: gpu-cgroup.sh DIST CGROUP [BIN_DIR]}
bin=${3:-$here/../../target/release}
p=$(mktemp -d /tmp/nvhook-payload.XXXXXX)
trap 'rm -rf "$p"' EXIT
cp "$here/payloads/gpu-cgroup.sh" "$p/run.sh"
cp "$bin/nvhook" "$bin/nvhook-runtime" "$p/"
"$scripts/make-fake-driver.sh" "$p/driver" 2 >/dev/null
mkdir -p "$p/bundle"
"$scripts/make-rootfs.sh" "$p/bundle/rootfs" debian >/dev/null
# The GPU nodes the container probes, outside its /dev (a tmpfs runc mounts over the
# rootfs's own /dev), so that a GPU it did not ask for is there to be refused.
mkdir -p "$p/bundle/rootfs/gpu"
mknod -m 666 "$p/bundle/rootfs/gpu/nvidia0" c 195 0
mknod -m 666 "$p/bundle/rootfs/gpu/nvidia1" c 195 1
# runc's default spec, detached-friendly (no terminal), sleeping, asking for GPU 0.
(cd "$p/bundle" && runc spec)
# sed, not jq/python: the CI machine has neither; runc spec's layout is stable.
sed -i -e 's/"terminal": true/"terminal": false/' \
    -e '/"args": \[/,/\]/s/"sh"/"sleep", "3600"/' \
    -e 's/"TERM=xterm"/"TERM=xterm", "NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_DRIVER_CAPABILITIES=compute,utility"/' \
    -e 's|"path": "rootfs"|"path": "/payload/bundle/rootfs"|' \
    -e 's/"linux": {/"linux": { "cgroupsPath": "placeholder",/' "$p/bundle/config.json"
# (runc refuses a rootfs that is a symlink: both cases' bundles name the one copy by
# its absolute path; run.sh sets cgroupsPath per case.)
o=${OUT:-/tmp/nvhook-vm-out/gpu-cgroup-$dist-$cg}
rm -rf "$o"
NVHOOK_VM_QUIET=${NVHOOK_VM_QUIET:-1} "$here/run-vm.sh" "$dist" "$cg" "$p" "$o" || rc=$?
cat "$o/log" 2>/dev/null
exit "${rc:-0}"
