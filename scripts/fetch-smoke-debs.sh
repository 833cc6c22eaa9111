#!/bin/sh
# Prepares what scripts/gpu-smoke.sh needs on a GPU machine that has no runc and no
# compiler, in .work (which git ignores): Debian's runc, libseccomp2 and busybox-static
# packages (.work/debs), and the compute check built against glibc (.work/smoke/cuda-ptx).
set -eu
cd "$(dirname "$0")/.."
mkdir -p .work/debs .work/smoke
gcc -O1 -Wall -o .work/smoke/cuda-ptx scripts/smoke/cuda-ptx.c
cd .work/debs
apt-get download runc libseccomp2 busybox-static
ls -l
