#!/bin/sh
# Builds a small container root: busybox (static), the host's glibc (libc, libm, libdl,
# libpthread, librt: real driver binaries need them) and loader, and a static
# /sbin/ldconfig (Ubuntu's /sbin/ldconfig is a wrapper script: its ldconfig.real is
# taken), laid out Debian-style or RHEL-style.
#
#   scripts/make-rootfs.sh OUT debian|rhel
set -eu
out=${1:?usage: make-rootfs.sh OUT debian|rhel}
flavor=${2:?usage: make-rootfs.sh OUT debian|rhel}
busybox=${BUSYBOX:-/bin/busybox}
[ -x "$busybox" ] || { echo "make-rootfs: $busybox missing (install busybox-static)" >&2; exit 1; }

rm -rf "$out"
mkdir -p "$out"
cd "$out"
mkdir -p usr/bin usr/sbin usr/lib usr/lib64 etc/ld.so.conf.d proc dev sys tmp root run var/cache/ldconfig
ln -s usr/bin bin
ln -s usr/sbin sbin
ln -s usr/lib lib
ln -s usr/lib64 lib64
ln -s ../run var/run
chmod 1777 tmp

cp "$busybox" usr/bin/busybox
for a in $(usr/bin/busybox --list); do
    [ -e "usr/bin/$a" ] || ln -s busybox "usr/bin/$a"
done
host_ldconfig=$(readlink -f /sbin/ldconfig)
[ -f /sbin/ldconfig.real ] && host_ldconfig=$(readlink -f /sbin/ldconfig.real)
cp "$host_ldconfig" usr/sbin/ldconfig

# The rest of glibc that the driver's own binaries link (stubs since glibc 2.34).
copy_libs() {
    for l in libm.so.6 libdl.so.2 libpthread.so.0 librt.so.1; do
        [ -e "/lib/x86_64-linux-gnu/$l" ] && cp "$(readlink -f "/lib/x86_64-linux-gnu/$l")" "$1/$l"
    done
    return 0
}
libc=$(readlink -f /lib/x86_64-linux-gnu/libc.so.6)
ld=$(readlink -f /lib64/ld-linux-x86-64.so.2)
case $flavor in
debian)
    libdir=usr/lib/x86_64-linux-gnu
    mkdir -p $libdir
    cp "$libc" $libdir/libc.so.6
    cp "$ld" $libdir/ld-linux-x86-64.so.2
    ln -s ../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 usr/lib64/ld-linux-x86-64.so.2
    copy_libs $libdir
    echo 12.5 >etc/debian_version
    printf 'include /etc/ld.so.conf.d/*.conf\n' >etc/ld.so.conf
    echo /usr/lib/x86_64-linux-gnu >etc/ld.so.conf.d/x86_64-linux-gnu.conf
    ;;
rhel)
    libdir=usr/lib64
    cp "$libc" $libdir/libc.so.6
    cp "$ld" $libdir/ld-linux-x86-64.so.2
    copy_libs $libdir
    echo 'Red Hat Enterprise Linux release 9.4 (Plow)' >etc/redhat-release
    printf 'include ld.so.conf.d/*.conf\n' >etc/ld.so.conf
    # RHEL's own ldconfig trusts /usr/lib64 built in; the host's Debian one needs telling.
    echo /usr/lib64 >etc/ld.so.conf.d/lib64.conf
    ;;
*)
    echo "make-rootfs: unknown flavor $flavor (debian or rhel)" >&2
    exit 1
    ;;
esac
echo 'root:x:0:0:root:/root:/bin/sh' >etc/passwd
echo 'root:x:0:' >etc/group
ldconfig -r "$out"
echo "$flavor rootfs in $out"
