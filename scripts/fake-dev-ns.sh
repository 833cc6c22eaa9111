#!/bin/sh
# Usage (as root): unshare -m --propagation private scripts/fake-dev-ns.sh DRIVER_DEV CMD...
#
# Runs CMD in the calling (private) mount namespace after replacing /dev there with a
# copy of the host's /dev plus the synthetic driver's device nodes (DRIVER_DEV, the
# dev/ of make-fake-driver.sh's output). Engines that bind-mount device nodes from
# their own path (rootless runc does, for CDI's deviceNodes) then find them at
# /dev/nvidia*, as on a GPU host. The host's /dev is never written: refuses to run
# outside a private mount namespace.
set -eu
fake=$1
shift
if [ "$(readlink /proc/self/ns/mnt)" = "$(readlink /proc/1/ns/mnt)" ]; then
    echo "fake-dev-ns: run me under 'unshare -m --propagation private'" >&2
    exit 1
fi
d=$(mktemp -d)
mount -t tmpfs -o mode=755 nvhook-fake-dev "$d"
cp -a --one-file-system /dev/. "$d/"
for m in pts shm mqueue hugepages; do
    if mountpoint -q "/dev/$m"; then mount --rbind "/dev/$m" "$d/$m"; fi
done
cp -a "$fake"/nvidia* "$d/"
mount --move "$d" /dev
rmdir "$d" 2>/dev/null || true
exec "$@"
