#!/bin/sh
# Builds a bootable Debian VM image for the systemd test host (see run-vm.sh):
# a root file system with a real systemd as PID 1 and the container engines nvhook
# must work under (runc, crun, podman, docker, containerd), plus the kernel and initrd
# to boot it directly with qemu -kernel (no bootloader, no partition table).
#
#   scripts/systemd-host/build-image.sh DIST   # DIST = bookworm | trixie | bookworm-arm64
#
# bookworm-arm64 is an arm64 host (Grace-like, booted by qemu-system-aarch64): systemd
# and runc only, its package set-up run emulated through qemu-user (binfmt_misc).
#
# Output (cached): $NVHOOK_VM_CACHE/DIST/{rootfs.ext4,vmlinuz,initrd.img,stamp}
# ($NVHOOK_VM_CACHE defaults to /var/cache/nvhook-vm). The stamp holds this script's
# own hash: the image is rebuilt only when the script changed, so editing the recipe
# below is all it takes to invalidate every cache. Needs root and network access to a
# Debian mirror ($DEBIAN_MIRROR, default http://deb.debian.org/debian).
set -eu
dist=${1:?usage: build-image.sh bookworm|trixie|bookworm-arm64}
case $dist in
bookworm | trixie) release=$dist arch=amd64 ;;
bookworm-arm64) release=bookworm arch=arm64 ;;
*) echo "build-image.sh: DIST must be bookworm, trixie or bookworm-arm64" >&2; exit 2 ;;
esac
cache=${NVHOOK_VM_CACHE:-/var/cache/nvhook-vm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
# The hash covers this script and the in-VM payload runner it installs.
hash=$(cat "$self" "$(dirname "$self")/nvhook-payload" | sha256sum | cut -d' ' -f1)
dir=$cache/$dist

if [ -f "$dir/stamp" ] && [ "$(cat "$dir/stamp")" = "$hash" ] &&
    [ -f "$dir/rootfs.ext4" ] && [ -f "$dir/vmlinuz" ] && [ -f "$dir/initrd.img" ]; then
    echo "build-image: $dist image up to date in $dir"
    exit 0
fi

mkdir -p "$dir/debs"
# One build per DIST at a time (parallel CI jobs, or run-vm.sh called twice): the
# second waits, then finds the image up to date.
if [ "${NVHOOK_VM_LOCKED:-}" != "$dist" ] && command -v flock >/dev/null; then
    NVHOOK_VM_LOCKED=$dist exec flock "$dir/.lock" "$self" "$@"
fi

t0=$(date +%s)
lap=$t0
step() { # print how long the previous step took, then name the next one
    now=$(date +%s)
    [ -n "${cur:-}" ] && echo "build-image: [$dist] $cur: $((now - lap))s"
    cur=$1
    lap=$now
    [ -n "$1" ] && echo "build-image: [$dist] $1 ..."
    return 0
}

step "host tools"
need=
command -v debootstrap >/dev/null || need="$need debootstrap"
command -v mke2fs >/dev/null || need="$need e2fsprogs"
command -v qemu-system-x86_64 >/dev/null || need="$need qemu-system-x86"
command -v qemu-img >/dev/null || need="$need qemu-utils"
if [ "$arch" = arm64 ]; then
    command -v qemu-system-aarch64 >/dev/null || need="$need qemu-system-arm"
    command -v qemu-aarch64-static >/dev/null || need="$need qemu-user-static"
fi
if [ -n "$need" ]; then
    apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need
fi
# debootstrap's second stage and the chroot steps run arm64 programs: qemu-user
# through binfmt_misc (registered with the F flag, so it works inside the chroot).
[ "$arch" = arm64 ] && "$(dirname "$self")/../arm64.sh" binfmt

root=$dir/root.tmp
# Bind mounts made for the chroot steps must go whatever happens, or the next
# rm -rf would walk into the host's /proc and /dev.
cleanup() {
    for m in dev/pts dev sys proc; do
        mountpoint -q "$root/$m" 2>/dev/null && umount -l "$root/$m"
    done
    return 0
}
trap 'cleanup' EXIT INT TERM
cleanup
rm -rf "$root"

# minbase (only Priority: required) plus what the tests need: the default variant would
# add ~40 "important" packages (man-db, cron, ...) that only slow the boot. --include
# resolves Depends, not Recommends, which keeps the engines to what they need to run.
# docker.io pulls containerd, runc, iptables; podman pulls conmon, containers-common.
# uidmap: rootless podman; e2fsprogs/procps/util-linux: ordinary tools the tests use.
# netavark: containers-common depends on the virtual container-network-stack, and
# debootstrap cannot pick a provider of a virtual package by itself (bookworm fails).
pkgs=linux-image-amd64,initramfs-tools,systemd,systemd-sysv,dbus,udev,kmod,iproute2,\
runc,crun,podman,netavark,docker.io,containerd,busybox-static,uidmap,procps,util-linux,\
e2fsprogs,iptables,tini,catatonit
# trixie's docker.io is only the daemon: the docker CLI is its own package there.
[ "$dist" = trixie ] && pkgs=$pkgs,docker-cli
# arm64: every package's set-up runs emulated, so only what its tests use: runc, gcc
# with glibc's headers (the library and equivalence tests build libraries natively),
# patch (the engine installers' diffs are checked against it).
[ "$arch" = arm64 ] && pkgs=linux-image-arm64,initramfs-tools,systemd,systemd-sysv,dbus,udev,\
kmod,runc,busybox-static,procps,util-linux,e2fsprogs,gcc,libc6-dev,patch
step "debootstrap $dist"
# --cache-dir keeps the .debs across rebuilds (a recipe change redownloads nothing).
debootstrap --arch="$arch" --variant=minbase --include="$pkgs" --cache-dir="$dir/debs" \
    "$release" "$root" "$mirror" >"$dir/debootstrap.log" 2>&1 || {
    tail -40 "$dir/debootstrap.log" "$root/debootstrap/debootstrap.log" 2>/dev/null >&2
    echo "build-image: debootstrap failed (log: $dir/debootstrap.log)" >&2
    exit 1
}

step "configure"
# systemctl and update-initramfs in the chroot want /proc, /sys and /dev.
mount -t proc proc "$root/proc"
mount -t sysfs sys "$root/sys"
mount --bind /dev "$root/dev"
echo nvhook-vm >"$root/etc/hostname"
printf '127.0.0.1 localhost nvhook-vm\n' >"$root/etc/hosts"
# Root is the whole virtio disk; fsck is pointless on a throw-away overlay.
printf '/dev/vda / ext4 rw,errors=remount-ro 0 0\n' >"$root/etc/fstab"
# A fixed machine id: an empty one makes systemd treat every boot as a first boot
# (ConditionFirstBoot units, systemd-firstboot prompting on the console).
echo 6e7668f6f6b64a0a8c56d1b0a1e2f3c4 >"$root/etc/machine-id"
ln -sf /etc/machine-id "$root/var/lib/dbus/machine-id" 2>/dev/null || true
# Root without a password on the serial console: only for poking at a VM by hand.
sed -i 's/^root:[^:]*:/root::/' "$root/etc/shadow"

# The payload runner (see nvhook-payload for what it does).
install -m 755 "$(dirname "$self")/nvhook-payload" "$root/usr/local/sbin/nvhook-payload"
cat >"$root/etc/systemd/system/nvhook-payload.service" <<'UNIT'
# Runs the test payload from the second disk (label PAYLOAD), then powers the VM off.
[Unit]
Description=nvhook test payload
# After multi-user.target: the system is fully up (dbus, udev settled, journald), as a
# test on a real host would find it. docker/containerd are not started at boot (tests
# start them); ordering after them would cost boot time for tests that do not use them.
After=multi-user.target
Wants=dbus.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/nvhook-payload
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
UNIT
# systemctl works offline on the chroot (it only makes links).
chroot "$root" systemctl enable nvhook-payload.service
chroot "$root" systemctl set-default multi-user.target
# Not started at boot: under TCG each daemon costs seconds, and most tests don't use
# them (the tests `systemctl start docker` / `containerd` when they need them).
for u in docker.service docker.socket containerd.service; do
    chroot "$root" systemctl disable "$u" 2>/dev/null || true
done
# Timers and services that only waste a short-lived VM's time.
for u in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service \
    fstrim.timer dpkg-db-backup.timer systemd-tmpfiles-clean.timer podman-auto-update.timer \
    podman-restart.service podman-clean-transient.service systemd-firstboot.service \
    getty@tty1.service serial-getty@ttyS0.service serial-getty@ttyAMA0.service; do
    chroot "$root" systemctl mask "$u" >/dev/null 2>&1 || true
done
# Podman: the systemd cgroup manager (already the default; pinned so a changed
# default cannot silently move the tests off the code path they are for).
mkdir -p "$root/etc/containers/containers.conf.d"
printf '[engine]\ncgroup_manager = "systemd"\n' >"$root/etc/containers/containers.conf.d/50-nvhook-vm.conf"

step "initramfs"
# A small initrd with only what mounts a virtio ext4 root: the stock MODULES=most
# image is ~10x bigger, and decompressing it under TCG costs boot time on every run.
printf 'MODULES=list\nCOMPRESS=gzip\n' >"$root/etc/initramfs-tools/conf.d/nvhook-vm.conf"
printf 'virtio_pci\nvirtio_mmio\nvirtio_blk\next4\n' >>"$root/etc/initramfs-tools/modules"
chroot "$root" update-initramfs -u -k all >/dev/null
cleanup

step "trim"
# What the VM never reads: .debs, apt lists, docs, and kernel modules for hardware a
# qemu VM does not have (keeps the image and the mke2fs copy small).
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'en*' -exec rm -rf {} + 2>/dev/null || true
for m in "$root"/lib/modules/* "$root"/usr/lib/modules/*; do
    [ -d "$m/kernel/drivers" ] || continue
    rm -rf "$m/kernel/drivers/gpu" "$m/kernel/drivers/net/wireless" "$m/kernel/drivers/media" \
        "$m/kernel/drivers/infiniband" "$m/kernel/drivers/staging" "$m/kernel/drivers/net/ethernet" \
        "$m/kernel/sound" "$m/kernel/drivers/bluetooth" "$m/kernel/drivers/iio" "$m/kernel/drivers/hid" \
        "$m/kernel/drivers/usb" "$m/kernel/drivers/scsi" "$m/kernel/drivers/isdn" "$m/kernel/net/wireless" \
        "$m/kernel/net/mac80211" "$m/kernel/net/bluetooth" "$m/kernel/drivers/input"
    chroot "$root" depmod "$(basename "$m")"
done

step "kernel"
# vmlinuz/initrd.img links at / (Debian's linux-image postinst makes them).
k=$(ls "$root"/boot/vmlinuz-* | sort -V | tail -1)
i=$root/boot/initrd.img-${k##*/vmlinuz-}
cp "$k" "$dir/vmlinuz.tmp"
cp "$i" "$dir/initrd.img.tmp"

step "mke2fs"
# A sparse 3 GiB file holds a ~1 GiB root with room for images and container state;
# -d copies the tree in (ownership, modes, device nodes, xattrs), no loop mount needed.
rm -f "$dir/rootfs.ext4.tmp"
mke2fs -q -t ext4 -L nvhook-root -E lazy_itable_init=0,lazy_journal_init=0 \
    -d "$root" "$dir/rootfs.ext4.tmp" "${NVHOOK_VM_ROOT_SIZE:-3G}" >/dev/null

step "versions"
# Record what the image holds, for the report (and for tests that need to know).
{
    echo "dist=$dist"
    echo "arch=$arch"
    echo "kernel=${k##*/vmlinuz-}"
    for p in systemd runc crun podman docker.io containerd gcc; do
        chroot "$root" dpkg-query -W "$p" >/dev/null 2>&1 || continue
        echo "$p=$(chroot "$root" dpkg-query -W -f '${Version}' "$p" 2>/dev/null)"
    done
} >"$dir/versions.tmp"
cat "$dir/versions.tmp"

step "install"
# Commit: stamp last, so an interrupted build is never taken as complete.
rm -f "$dir/stamp"
mv "$dir/rootfs.ext4.tmp" "$dir/rootfs.ext4"
mv "$dir/vmlinuz.tmp" "$dir/vmlinuz"
mv "$dir/initrd.img.tmp" "$dir/initrd.img"
mv "$dir/versions.tmp" "$dir/versions"
rm -rf "$root"
echo "$hash" >"$dir/stamp"
step ""
echo "build-image: [$dist] done in $(($(date +%s) - t0))s: $dir"
