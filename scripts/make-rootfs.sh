#!/bin/sh
# Builds a small container root: busybox (static), the host's glibc (libc, libm, libdl,
# libpthread, librt: real driver binaries need them) and loader, and a static
# /sbin/ldconfig (Ubuntu's /sbin/ldconfig is a wrapper script: its ldconfig.real is
# taken), laid out Debian-style or RHEL-style, for the machine it runs on (x86-64, or
# arm64 as in the arm64 test host).
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
# The loader's name and the dir its PT_INTERP path names (lib64 on x86-64, lib on arm64).
case $(uname -m) in
x86_64) triplet=x86_64-linux-gnu ldname=ld-linux-x86-64.so.2 interp=usr/lib64 ;;
aarch64) triplet=aarch64-linux-gnu ldname=ld-linux-aarch64.so.1 interp=usr/lib ;;
*) echo "make-rootfs: unsupported machine $(uname -m)" >&2; exit 1 ;;
esac
copy_libs() {
    for l in libm.so.6 libdl.so.2 libpthread.so.0 librt.so.1; do
        [ -e "/lib/$triplet/$l" ] && cp "$(readlink -f "/lib/$triplet/$l")" "$1/$l"
    done
    return 0
}
libc=$(readlink -f /lib/$triplet/libc.so.6)
ld=$(readlink -f /lib/$triplet/$ldname)
case $flavor in
debian)
    libdir=usr/lib/$triplet
    mkdir -p $libdir
    cp "$libc" $libdir/libc.so.6
    cp "$ld" $libdir/$ldname
    [ -e $interp/$ldname ] || ln -s "$(echo $interp | sed 's|[^/]*|..|g')/$libdir/$ldname" $interp/$ldname
    copy_libs $libdir
    echo 12.5 >etc/debian_version
    printf 'include /etc/ld.so.conf.d/*.conf\n' >etc/ld.so.conf
    echo /usr/lib/$triplet >etc/ld.so.conf.d/$triplet.conf
    ;;
rhel)
    libdir=usr/lib64
    cp "$libc" $libdir/libc.so.6
    cp "$ld" $libdir/$ldname
    [ -e $interp/$ldname ] || ln -s ../lib64/$ldname $interp/$ldname
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
