#!/bin/sh
# Smoke test of the systemd test host: boots DIST with CGROUP and prints the versions
# the image holds (payloads/versions.sh) and nvhook's own --version from the VM.
#
#   scripts/systemd-host/smoke.sh DIST CGROUP [BIN_DIR]   # BIN_DIR: target/release
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dist=${1:?usage: smoke.sh DIST CGROUP [BIN_DIR]}
cg=${2:?usage: smoke.sh DIST CGROUP [BIN_DIR]}
bin=${3:-$here/../../target/release}
p=$(mktemp -d /tmp/nvhook-payload.XXXXXX)
trap 'rm -rf "$p"' EXIT
cp "$here/payloads/versions.sh" "$p/run.sh"
cp "$bin/nvhook" "$bin/nvhook-runtime" "$p/"
o=${OUT:-/tmp/nvhook-vm-out/smoke-$dist-$cg}
rm -rf "$o"
NVHOOK_VM_QUIET=${NVHOOK_VM_QUIET:-1} "$here/run-vm.sh" "$dist" "$cg" "$p" "$o" || rc=$?
cat "$o/log" 2>/dev/null
exit "${rc:-0}"
