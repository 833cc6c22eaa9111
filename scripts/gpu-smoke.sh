#!/bin/sh
# Smoke test on a real NVIDIA machine (see README, "Real GPU smoke test"): nvhook info
# and plan against the real driver, then a real container through the shim running
# nvidia-smi -L. Needs target/release/{nvhook,nvhook-runtime} built and, where the
# machine has no runc, Debian's runc, libseccomp2 and busybox-static .deb files in
# .work/debs (scripts/fetch-smoke-debs.sh downloads them). Unpacks into a temp dir,
# never into /.
set -u
cd "$(dirname "$0")/.."
repo=$(pwd)
bin=$repo/target/release
work=$(mktemp -d /tmp/nvhook-smoke.XXXXXX)
say() { printf '\n=== %s\n' "$*"; }
say "machine"; uname -a; nvidia-smi -L 2>&1 | head -4 || echo "(no host nvidia-smi on PATH)"

tools=$work/tools
if ! command -v runc >/dev/null 2>&1 || [ ! -x /bin/busybox ]; then
    mkdir -p "$tools"
    for d in .work/debs/*.deb; do dpkg -x "$d" "$tools" || exit 1; done
    export PATH="$tools/usr/sbin:$tools/usr/bin:$tools/bin:$PATH"
    export LD_LIBRARY_PATH="$tools/usr/lib/x86_64-linux-gnu:$tools/lib/x86_64-linux-gnu"
fi
busybox=/bin/busybox
[ -x "$tools/bin/busybox" ] && busybox=$tools/bin/busybox

root=/
for r in /usr/local/nvidia /run/nvidia/driver; do [ -d "$r/lib64" ] || [ -d "$r/lib" ] && { root=$r; break; }; done
ld=@/sbin/ldconfig
[ -x /sbin/ldconfig.real ] && ld=@/sbin/ldconfig.real
# SMOKE_DRIVER_ROOT / SMOKE_DEV_ROOT / SMOKE_PROC_ROOT: rehearse on a synthetic driver.
cat >"$work/nvhook.toml" <<CONF
driver-root = "${SMOKE_DRIVER_ROOT:-$root}"
dev-root = "${SMOKE_DEV_ROOT:-/}"
proc-root = "${SMOKE_PROC_ROOT:-/proc}"
ldconfig = "$ld"
[runtime]
runtimes = ["runc"]
[log]
file = "$work/nvhook.log"
level = "debug"
CONF
export NVHOOK_CONFIG=$work/nvhook.toml
say "config"; cat "$work/nvhook.toml"
say "nvhook info"; "$bin/nvhook" info

mkdir -p "$work/bundle"
BUSYBOX=$busybox scripts/make-rootfs.sh "$work/bundle/rootfs" debian >/dev/null || exit 1
(cd "$work/bundle" && runc spec) || exit 1
sed -i -e 's/"terminal": true/"terminal": false/' \
    -e 's|"sh"$|"sh", "-c", "nvidia-smi -L; echo rc=$?; ls /dev \| grep nvidia; ldconfig -p \| grep -E \\"libcuda.so.1\|libnvidia-ml.so.1\\"; grep ModifyDeviceFiles /proc/driver/nvidia/params; ls /proc/driver/nvidia/gpus; true"|' \
    -e 's|"TERM=xterm"|"TERM=xterm", "NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_DRIVER_CAPABILITIES=all"|' "$work/bundle/config.json"
printf '{"ociVersion":"1.0.2","id":"smoke","status":"creating","bundle":"%s"}' "$work/bundle" >"$work/state.json"
say "nvhook plan (GPU 0, all capabilities)"; "$bin/nvhook" plan --state "$work/state.json"
say "container through nvhook-runtime: nvidia-smi -L"
"$bin/nvhook-runtime" --root "$work/runc" run --bundle "$work/bundle" smoke-$$ </dev/null
echo "container exit: $?"
say "hook log"; cat "$work/nvhook.log"
