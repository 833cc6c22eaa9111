#!/bin/sh
# Smoke test on a real NVIDIA machine (see README, "Real GPU smoke test"): nvhook info
# and plan against the real driver with nvhook's default configuration, then a real
# container through the shim running nvidia-smi -L and a compute check (a PTX kernel
# JIT-compiled and run through the driver's libcuda.so.1, no CUDA toolkit in the image).
# Needs target/release/{nvhook,nvhook-runtime} built and, where the machine has no runc
# or no gcc, what scripts/fetch-smoke-debs.sh puts in .work (Debian's runc, libseccomp2
# and busybox-static .deb files, and the compute check). Unpacks into a temp dir, never
# into /.
set -u
cd "$(dirname "$0")/.."
repo=$(pwd)
bin=${SMOKE_BIN:-$repo/target/release}
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

# nvhook's defaults (driver root /, the host's ldconfig: /sbin/ldconfig.real on Ubuntu)
# but for the runtime and the log. SMOKE_DRIVER_ROOT / SMOKE_DEV_ROOT / SMOKE_PROC_ROOT /
# SMOKE_SYS_ROOT: rehearse on a synthetic driver.
{
    [ -n "${SMOKE_DRIVER_ROOT:-}" ] && echo "driver-root = \"$SMOKE_DRIVER_ROOT\""
    [ -n "${SMOKE_DEV_ROOT:-}" ] && echo "dev-root = \"$SMOKE_DEV_ROOT\""
    [ -n "${SMOKE_PROC_ROOT:-}" ] && echo "proc-root = \"$SMOKE_PROC_ROOT\""
    [ -n "${SMOKE_SYS_ROOT:-}" ] && echo "sys-root = \"$SMOKE_SYS_ROOT\""
    printf '[runtime]\nruntimes = ["runc"]\n[log]\nfile = "%s"\nlevel = "debug"\n' "$work/nvhook.log"
} >"$work/nvhook.toml"
export NVHOOK_CONFIG=$work/nvhook.toml
say "config"; cat "$work/nvhook.toml"
say "nvhook info"; "$bin/nvhook" info

mkdir -p "$work/bundle"
BUSYBOX=$busybox scripts/make-rootfs.sh "$work/bundle/rootfs" debian >/dev/null || exit 1
# The compute check: built here where there is a compiler, else the one prepared in .work.
if command -v gcc >/dev/null 2>&1; then
    gcc -O1 -o "$work/bundle/rootfs/usr/bin/cuda-ptx" scripts/smoke/cuda-ptx.c || exit 1
elif [ -x .work/smoke/cuda-ptx ]; then
    cp .work/smoke/cuda-ptx "$work/bundle/rootfs/usr/bin/cuda-ptx"
else
    echo "no gcc and no .work/smoke/cuda-ptx: run scripts/fetch-smoke-debs.sh first" >&2
    exit 1
fi
(cd "$work/bundle" && runc spec) || exit 1
sed -i -e 's/"terminal": true/"terminal": false/' \
    -e 's|"sh"$|"sh", "-c", "echo == smi; nvidia-smi -L; echo smi-rc=$?; echo == compute; cuda-ptx; echo compute-rc=$?; echo == nodes; ls /dev \| grep nvidia; echo == ldcache; ldconfig -p \| grep -E \\"libcuda.so.1\|libnvidia-ml.so.1\|libnvidia-ptxjitcompiler\\"; echo == proc; grep ModifyDeviceFiles /proc/driver/nvidia/params; ls /proc/driver/nvidia/gpus; true"|' \
    -e 's|"TERM=xterm"|"TERM=xterm", "NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_DRIVER_CAPABILITIES=all"|' "$work/bundle/config.json"
printf '{"ociVersion":"1.0.2","id":"smoke","status":"creating","bundle":"%s"}' "$work/bundle" >"$work/state.json"
say "nvhook plan (GPU 0, all capabilities)"; "$bin/nvhook" plan --state "$work/state.json"
say "container through nvhook-runtime: nvidia-smi -L and the compute check"
"$bin/nvhook-runtime" --root "$work/runc" run --bundle "$work/bundle" smoke-$$ </dev/null | tee "$work/out.txt"
echo "container exit: $?"
say "hook log"; cat "$work/nvhook.log"
say "verdict"
ok=1
grep -q '^GPU 0: ' "$work/out.txt" && echo "nvidia-smi -L: OK" || { echo "nvidia-smi -L: FAILED"; ok=0; }
grep -q '^compute: OK' "$work/out.txt" && echo "compute: OK" || { echo "compute: FAILED"; ok=0; }
[ "$ok" = 1 ]
