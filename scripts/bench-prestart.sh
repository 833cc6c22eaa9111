#!/bin/sh
# Benchmark: how long `nvhook prestart` takes on the synthetic driver, and what it adds
# to a container start. Run as root:  scripts/bench-prestart.sh [RUNS]
#
# Per run, interleaved, each on a fresh copy of the image:
#   plain     `runc run` of the container without a GPU request (the baseline);
#   gpu       `runc run` through nvhook-runtime with 1 GPU and all capabilities;
#   hook      within that run, `nvhook prestart` as runc calls it, timed from exec to
#             exit by a wrapper installed as hook-path (its own fork adds a little).
# Prints median, min and max (microseconds), the hook's own phase medians from its
# debug log, and the ratios against the baseline measured in the same runs.
set -eu
runs=${1:-40}
cd "$(dirname "$0")/.."
repo=$(pwd)
scripts/ci-deps.sh
cargo build --release --workspace -q
bin=$repo/target/release
work=$repo/.work/bench
rm -rf "$work"
mkdir -p "$work"
scripts/make-fake-driver.sh "$work/driver" 1 >/dev/null
scripts/make-rootfs.sh "$work/image" debian >/dev/null
gcc -O2 -o "$work/timeit" scripts/fake/timeit.c
gcc -O2 -DHOOK="\"$bin/nvhook\"" -DOUT="\"$work/hook.us\"" -o "$work/hookwrap" scripts/fake/hookwrap.c
log=$work/nvhook.log
cfg=$work/nvhook.toml
{ cat "$work/driver/config.toml"; printf 'hook-path = "%s/hookwrap"\n[log]\nfile = "%s"\nlevel = "debug"\n' "$work" "$log"; } >"$cfg"

mkbundle() { # DIR ENV...
    d=$1; shift
    rm -rf "$d"; mkdir -p "$d"
    cp -a "$work/image" "$d/rootfs"
    (cd "$d" && runc spec)
    extra=
    for e in "$@"; do extra="$extra, \"$e\""; done
    sed -i -e 's/"terminal": true/"terminal": false/' -e 's|"sh"$|"true"|' \
        -e "s|\"TERM=xterm\"|\"TERM=xterm\"$extra|" "$d/config.json"
}
state=$work/runc-state
gpu_env="NVIDIA_VISIBLE_DEVICES=0 NVIDIA_DRIVER_CAPABILITIES=all"
: >"$work/hook.us"; : >"$work/plain.us"; : >"$work/gpu.us"
i=0
while [ "$i" -lt "$runs" ]; do
    # a plain container start, then one with a GPU through the shim
    mkbundle "$work/p"
    "$work/timeit" runc --root "$state" run --bundle "$work/p" p$i 3>>"$work/plain.us" </dev/null
    mkbundle "$work/g" $gpu_env
    NVHOOK_CONFIG=$cfg "$work/timeit" "$bin/nvhook-runtime" --root "$state" run --bundle "$work/g" g$i 3>>"$work/gpu.us" </dev/null
    i=$((i + 1))
done

stats() { sort -n "$1" | awk '{v[NR]=$1} END {m=(NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2; printf "%d %d %d", m, v[1], v[NR]}'; }
set -- $(stats "$work/hook.us"); hook_med=$1; hook_min=$2; hook_max=$3
set -- $(stats "$work/plain.us"); plain_med=$1; plain_min=$2; plain_max=$3
set -- $(stats "$work/gpu.us"); gpu_med=$1; gpu_min=$2; gpu_max=$3
echo "nvhook prestart benchmark: $runs runs, 1 synthetic GPU, all capabilities ($(nproc) CPUs)"
printf '  %-34s median %6d us  (min %d, max %d)\n' "nvhook prestart (exec to exit)" "$hook_med" "$hook_min" "$hook_max"
printf '  %-34s median %6d us  (min %d, max %d)\n' "runc run, no GPU (baseline)" "$plain_med" "$plain_min" "$plain_max"
printf '  %-34s median %6d us  (min %d, max %d)\n' "runc run via shim, 1 GPU" "$gpu_med" "$gpu_min" "$gpu_max"
awk -v h="$hook_med" -v p="$plain_med" -v g="$gpu_med" 'BEGIN {
    printf "  ratio GPU start / plain start:     %.2fx\n", g / p
    printf "  ratio hook / plain start:          %.2fx\n", h / p }'
echo "  hook phases, median us (from its debug log):"
grep -o 'timings_us.*' "$log" | tr ' ' '\n' | grep '=' | awk -F= '{print $1, $2}' | sort -k1,1 -k2n |
    awk '{n[$1]++; v[$1, n[$1]] = $2} END {for (k in n) {c = n[k]; m = (c % 2) ? v[k, (c + 1) / 2] : (v[k, c / 2] + v[k, c / 2 + 1]) / 2; printf "    %-9s %6d\n", k, m}}' | sort
