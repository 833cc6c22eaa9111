#!/bin/sh
# Payload (the VM's /payload/run.sh): a GPU container through nvhook-runtime and runc
# under a real systemd, and what its device cgroup lets it open, before and after
# `systemctl daemon-reload` (systemd rewrites a unit's device policy on reload; a
# device nvhook allowed behind its back is lost then).
#
# Expects in /payload (made by ../gpu-cgroup.sh): nvhook, nvhook-runtime, driver/ (from
# make-fake-driver.sh, 2 GPUs), bundle/ (config.json, rootfs/ from make-rootfs.sh with
# /gpu/nvidia0 = 195:0 and /gpu/nvidia1 = 195:1 outside the container's /dev tmpfs).
#
# GPU index 0 of the synthetic driver is minor 1 (index i = minor NGPUS-1-i): the
# container asks for GPU 0, so 195:1 (/dev/nvidia1, /gpu/nvidia1) must open with ENXIO
# (allowed; no real driver behind it) and 195:0 (/gpu/nvidia0) must fail with EPERM.
set -u
P=/payload
O=$P/out
rc=0
cat >$P/nvhook.toml <<CONF
driver-root = "$P/driver/root"
dev-root = "$P/driver"
proc-root = "$P/driver/proc"
sys-root = "$P/driver/sys"
[runtime]
runtimes = ["runc"]
hook-path = "$P/nvhook"
[log]
file = "$O/nvhook.log"
level = "debug"
CONF
export NVHOOK_CONFIG=$P/nvhook.toml
echo "== $(uname -r), $(systemctl --version | head -n1), cgroup fs $(stat -fc %T /sys/fs/cgroup), $(runc --version | head -n1)"

probe() { # ID: what the container can open
    /payload/nvhook-runtime $G exec "$1" sh -c '
        for d in /dev/nvidia1 /gpu/nvidia1 /gpu/nvidia0 /dev/nvidiactl; do
            if [ -e $d ]; then printf "%-14s %s\n" $d "$(head -c1 $d 2>&1 >/dev/null | sed "s/.*: //")"; else printf "%-14s missing\n" $d; fi
        done' 2>&1
}

devstate() { # ID UNIT: the cgroup's device policy as systemd and the kernel hold it
    if [ -n "$2" ]; then
        systemctl show "$2" -p DevicePolicy -p DeviceAllow 2>&1 | sed 's/^/  systemd: /'
    fi
    cgp=$(/payload/nvhook-runtime $G exec "$1" cat /proc/self/cgroup 2>/dev/null | sed -n 's/^[0-9]*:devices://p')
    if [ -n "$cgp" ] && [ -f "/sys/fs/cgroup/devices$cgp/devices.list" ]; then
        sed 's/^/  devices.list: /' "/sys/fs/cgroup/devices$cgp/devices.list" | grep -E '195|a \*' ||
            echo "  devices.list: (no 195:* entry)"
    fi
}

case_() { # NAME ID CGROUPS_PATH UNIT GLOBAL_FLAGS
    name=$1 id=$2 cgpath=$3 unit=$4 G=$5
    echo
    echo "==== $name: nvhook-runtime $G run -d (cgroupsPath $cgpath)"
    b=$P/bundle-$id
    rm -rf "$b"
    mkdir -p "$b"
    sed "s|\"cgroupsPath\": *\"[^\"]*\"|\"cgroupsPath\": \"$cgpath\"|" $P/bundle/config.json >"$b/config.json"
    if ! /payload/nvhook-runtime $G run -d --bundle "$b" "$id" </dev/null >"$O/$id.out" 2>&1; then
        echo "START FAILED:"
        cat "$O/$id.out"
        rc=1
        return 0
    fi
    cat "$O/$id.out"
    echo "-- before daemon-reload"
    probe "$id"
    devstate "$id" "$unit"
    systemctl daemon-reload
    sleep 2
    echo "-- after daemon-reload"
    probe "$id"
    devstate "$id" "$unit"
    /payload/nvhook-runtime $G kill "$id" KILL >/dev/null 2>&1
    sleep 1
    /payload/nvhook-runtime $G delete -f "$id" >/dev/null 2>&1
    return 0
}

case_ "systemd cgroup driver" nvsd system.slice:nvhook:nvsd nvhook-nvsd.scope "--systemd-cgroup"
case_ "cgroupfs driver (control)" nvfs /nvhook/nvfs "" ""
echo
echo "==== nvhook log (errors and the device step)"
grep -iE 'error|warn|device|cgroup|bpf' "$O/nvhook.log" | tail -n 30
exit $rc
