#!/bin/sh
# Boots a whole Debian VM (real kernel, systemd as PID 1) under qemu TCG, runs a test
# payload in it, and brings the payload's results out: the systemd test host.
#
#   scripts/systemd-host/run-vm.sh DIST CGROUP PAYLOAD_DIR OUT_DIR
#     DIST         bookworm | trixie | bookworm-arm64 (an arm64 host, booted by
#                  qemu-system-aarch64; the image is built and cached by build-image.sh)
#     CGROUP       v2 | v1 (hybrid: v1 controllers, as systemd sets v1 up by default)
#                  | v1-legacy (pure v1, no unified hierarchy at all)
#     PAYLOAD_DIR  copied to the VM's /payload; /payload/run.sh is run there as root by
#                  nvhook-payload.service, after multi-user.target, from /payload
#     OUT_DIR      gets console.log (serial console), and what the payload left in
#                  /payload/out: log (run.sh's output), rc, journal.txt, anything else
#
# Exit status: run.sh's own; 124 if the VM ran past $NVHOOK_VM_TIMEOUT; 1 (with the
# console's tail) if the payload never recorded a status.
#
# Environment: NVHOOK_VM_CACHE (image cache, /var/cache/nvhook-vm), NVHOOK_VM_TIMEOUT
# (seconds, 1200), NVHOOK_VM_MEM (MiB, 3072), NVHOOK_VM_SMP (2), NVHOOK_VM_PAYLOAD_SIZE
# (1G: room for the payload's output and whatever it unpacks), NVHOOK_VM_APPEND (more
# kernel arguments), NVHOOK_VM_QUIET=1 (console only to the file, not also to stdout),
# NVHOOK_VM_KEEP=1 (keep the overlay and payload disk, path printed).
#
# Why TCG: /dev/kvm on the CI machines does not boot a stock kernel, and TCG behaves
# the same everywhere. A boot to poweroff takes about a minute or two.
set -eu
usage="usage: run-vm.sh bookworm|trixie|bookworm-arm64 v2|v1|v1-legacy PAYLOAD_DIR OUT_DIR"
dist=${1:?$usage}
cg=${2:?$usage}
payload=${3:?$usage}
out=${4:?$usage}
here=$(cd "$(dirname "$0")" && pwd)
cache=${NVHOOK_VM_CACHE:-/var/cache/nvhook-vm}
[ -f "$payload/run.sh" ] || { echo "run-vm.sh: $payload/run.sh missing" >&2; exit 2; }

# The kernel's cgroup set-up is chosen on its command line. systemd 256+ refuses
# cgroup v1 unless forced (the variable reaches PID 1's environment from the command
# line); systemd 252 (bookworm) ignores it.
case $cg in
v2) cgargs="systemd.unified_cgroup_hierarchy=1" ;;
v1) cgargs="systemd.unified_cgroup_hierarchy=0 SYSTEMD_CGROUP_ENABLE_LEGACY_FORCE=1" ;;
v1-legacy) cgargs="systemd.unified_cgroup_hierarchy=0 systemd.legacy_systemd_cgroup_controller=1 SYSTEMD_CGROUP_ENABLE_LEGACY_FORCE=1" ;;
*) echo "run-vm.sh: CGROUP must be v2, v1 or v1-legacy" >&2; exit 2 ;;
esac

"$here/build-image.sh" "$dist"
img=$cache/$dist

mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/nvhook-vm.XXXXXX")
if [ "${NVHOOK_VM_KEEP:-0}" = 1 ]; then
    trap 'echo "run-vm: kept $work"' EXIT
else
    trap 'rm -rf "$work"' EXIT
fi
trap 'exit 130' INT TERM

# A copy-on-write overlay: the VM writes freely, the cached base stays pristine and
# can be shared by runs in parallel.
qemu-img create -q -f qcow2 -b "$img/rootfs.ext4" -F raw "$work/root.qcow2"
# The payload disk: mke2fs -d copies the tree in (device nodes and ownership too);
# sparse, so its size is only an upper bound on what the payload may write.
mke2fs -q -t ext4 -L PAYLOAD -d "$payload" "$work/payload.ext4" "${NVHOOK_VM_PAYLOAD_SIZE:-1G}" >/dev/null

# panic=-1 with -no-reboot: a kernel panic (or a reboot) ends qemu at once instead
# of waiting for the timeout. -nic none: the tests need no network, and without a
# NIC nothing waits for one.
# The machine: a PC, or for arm64 qemu's generic "virt" board (PCI, a PL011 UART).
# pauth-impdef: the emulated CPU signs pointers with a cheap hash, not QARMA (TCG spends
# much of an arm64 guest's time in that cipher otherwise).
case $dist in
*-arm64) machine="qemu-system-aarch64 -M virt -cpu max,pauth-impdef=on" console=ttyAMA0 ;;
*) machine="qemu-system-x86_64 -cpu max" console=ttyS0 ;;
esac
append="root=/dev/vda rw console=$console panic=-1 mitigations=off $cgargs ${NVHOOK_VM_APPEND:-}"
t0=$(date +%s)
echo "run-vm: booting $dist ($cg): $append"
# The serial console goes to a file (qemu's stdout, -serial stdio; the monitor off);
# unless NVHOOK_VM_QUIET=1, a tail -f shows it live. No pipeline around qemu: the
# exit status of timeout (124 on expiry) is taken directly.
: >"$out/console.log"
follow=
if [ "${NVHOOK_VM_QUIET:-0}" != 1 ]; then
    tail -n +1 -f "$out/console.log" &
    follow=$!
fi
set +e
# stdin from /dev/null: qemu must not take the caller's terminal.
# shellcheck disable=SC2086
timeout -k 10 "${NVHOOK_VM_TIMEOUT:-1200}" $machine \
    -accel tcg,thread=multi -m "${NVHOOK_VM_MEM:-3072}" -smp "${NVHOOK_VM_SMP:-2}" \
    -display none -monitor none -serial stdio -no-reboot -nic none \
    -device virtio-rng-pci \
    -kernel "$img/vmlinuz" -initrd "$img/initrd.img" -append "$append" \
    -drive file="$work/root.qcow2",if=virtio,format=qcow2 \
    -drive file="$work/payload.ext4",if=virtio,format=raw \
    </dev/null >>"$out/console.log" 2>&1
qs=$?
set -e
if [ -n "$follow" ]; then
    sleep 1
    kill "$follow" 2>/dev/null || true
    wait "$follow" 2>/dev/null || true
fi
echo "run-vm: $dist ($cg) boot to poweroff: $(($(date +%s) - t0))s (qemu status $qs)"

# The payload's /out, read from the disk image without mounting it.
rm -rf "$work/got"
mkdir -p "$work/got"
debugfs -R "rdump /out $work/got" "$work/payload.ext4" >/dev/null 2>&1 || true
[ -d "$work/got/out" ] && cp -a "$work/got/out/." "$out/"

if [ "$qs" = 124 ] || [ "$qs" = 137 ]; then
    echo "run-vm: the VM ran past ${NVHOOK_VM_TIMEOUT:-1200}s; console tail:" >&2
    tail -n 40 "$out/console.log" >&2
    exit 124
fi
if [ ! -f "$out/rc" ]; then
    echo "run-vm: the payload recorded no exit status; console tail:" >&2
    tail -n 40 "$out/console.log" >&2
    exit 1
fi
rc=$(cat "$out/rc")
echo "run-vm: payload exited $rc (output in $out)"
exit "$rc"
