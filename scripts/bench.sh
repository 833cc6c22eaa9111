#!/bin/sh
# nvhook's benchmarks, each a ratio against a baseline measured in the same run,
# interleaved, with medians and min-max over RUNS runs. Run as root:
#
#   scripts/bench.sh [RUNS] [SECTION...] [--nvidia-runtime DIR]
#             sections: start shim scaling ldconfig hostcache cgroup merge (default: all), and
#             nvidia (only with --nvidia-runtime; then part of the default)
#
#   start     `runc run` of a tiny container through the shim with 1 GPU and all
#             capabilities vs plain `runc run` without GPUs; the hook's exec-to-exit time
#             (a wrapper installed as hook-path) and its phases (its debug log); peak RSS.
#   shim      pass-through calls (`state`, `kill ID 0`) through the shim vs runc directly.
#   scaling   the hook with 1, 2, 8 and 64 synthetic GPUs (all visible), vs 1 GPU.
#   ldconfig  an image with 2000 extra libraries: plain `runc run` vs the start through nvhook
#             with its own cache update and with ld-cache = ldconfig; the hook big vs small.
#   hostcache `nvhook plan` (discovery and planning) with a host ld.so.cache listing 2000
#             more (non-NVIDIA) libraries vs the synthetic driver's small cache.
#   cgroup    the hook's device cgroup phase on cgroup v2 (runc's eBPF program read back
#             and replaced) vs v1 (`devices.allow` writes), same container, alternating;
#             v2 both loading its program every time and with the device program cache
#             (on a bpffs the script mounts in its work dir); v2 runs inside `unshare -m` with the unified hierarchy bound over
#             /sys/fs/cgroup (needs a hybrid host; on a v2-only host both are v2).
#   merge     nvhook's merge of 4096 CUDA compat names into a 16 MiB image ld.so.cache
#             whose entries share those names (the worst case) vs one whose names are
#             all distinct (cargo bench --bench ldcache_merge).
#   nvidia    `create` of the same bundle (GPU 0, all capabilities): plain `runc create`,
#             nvhook (`nvhook-runtime create`: the shim and its hook, default config), and
#             NVIDIA's `nvidia-container-runtime create` in CDI mode with the spec its own
#             `nvidia-ctk cdi generate` writes for the synthetic driver. DIR holds NVIDIA's
#             nvidia-container-runtime, nvidia-ctk and nvidia-cdi-hook (built apart: nvhook
#             never needs them). Each run also starts and deletes the container, untimed.
# Bundles and images live on a tmpfs mounted at .work/bench for the run.
set -eu
nvidia=
n=$#
while [ "$n" -gt 0 ]; do # take --nvidia-runtime DIR out, keep the rest in order
    a=$1; shift; n=$((n - 1))
    case $a in
    --nvidia-runtime)
        [ "$n" -gt 0 ] || { echo "bench: --nvidia-runtime needs a directory" >&2; exit 2; }
        nvidia=$1; shift; n=$((n - 1)) ;;
    --nvidia-runtime=*) nvidia=${a#*=} ;;
    *) set -- "$@" "$a" ;;
    esac
done
if [ -n "$nvidia" ]; then
    nvidia=$(cd "$nvidia" && pwd)
    for b in nvidia-container-runtime nvidia-ctk nvidia-cdi-hook; do
        [ -x "$nvidia/$b" ] || { echo "bench: no executable $nvidia/$b" >&2; exit 2; }
    done
fi
runs=${1:-40}
[ $# -gt 0 ] && shift
sections=${*:-start shim scaling ldconfig hostcache cgroup merge${nvidia:+ nvidia}}
cd "$(dirname "$0")/.."
repo=$(pwd)
scripts/ci-deps.sh
cargo build --release --workspace -q
bin=$repo/target/release
work=$repo/.work/bench
if mountpoint -q "$work" 2>/dev/null; then umount "$work"; fi
rm -rf "$work"
mkdir -p "$work"
# Bundles live on a tmpfs: every run copies and deletes an image, and on a disk that
# churn (journal commits, discards) would be measured instead of nvhook.
mount -t tmpfs -o size=3g,mode=755 nvhook-bench "$work"
trap 'cd /; umount -l "$work" 2>/dev/null || true' EXIT
scripts/make-rootfs.sh "$work/image" debian >/dev/null
gcc -O2 -o "$work/timeit" scripts/fake/timeit.c
state=$work/runc-state

# driver N: a synthetic driver with N GPUs, a hook wrapper and an nvhook config for it
driver() {
    d=$work/driver$1
    [ -d "$d" ] && return 0
    scripts/make-fake-driver.sh "$d" "$1" >/dev/null
    gcc -O2 -DHOOK="\"$bin/nvhook\"" -DOUT="\"$d/hook.us\"" -o "$d/hookwrap" scripts/fake/hookwrap.c
    { cat "$d/config.toml"; printf 'hook-path = "%s/hookwrap"\n[log]\nfile = "%s/nvhook.log"\nlevel = "debug"\n' "$d" "$d"; } >"$d/nvhook.toml"
}

mkbundle() { # DIR IMAGE ENV...
    b=$1; img=$2; shift 2
    rm -rf "$b"; mkdir -p "$b"
    cp -a "$img" "$b/rootfs"
    (cd "$b" && runc spec)
    extra=
    for e in "$@"; do extra="$extra, \"$e\""; done
    sed -i -e 's/"terminal": true/"terminal": false/' -e 's|"sh"$|"true"|' \
        -e "s|\"TERM=xterm\"|\"TERM=xterm\"$extra|" "$b/config.json"
}

# stats FILE [COLUMN]: "median min max" of a column of numbers
stats() { awk -v c="${2:-1}" '{print $c}' "$1" | sort -n | awk '{v[NR]=$1} END {m=(NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2; printf "%d %d %d", m, v[1], v[NR]}'; }
line() { # LABEL FILE [COLUMN] [UNIT]
    set -- "$1" $(stats "$2" "${3:-1}") "${4:-us}"
    printf '  %-44s median %7d %s  (min %d, max %d)\n' "$1" "$2" "$5" "$3" "$4"
}
ratio() { awk -v a="$2" -v b="$3" -v l="$1" 'BEGIN {printf "  %-44s %.2fx\n", l, a / b}'; }
med() { stats "$1" "${2:-1}" | cut -d' ' -f1; }
gpu_run() { # DRIVER-N IMAGE NAME ENV...: one container through the shim
    n=$1; img=$2; name=$3; shift 3
    mkbundle "$work/g" "$img" "$@"
    NVHOOK_CONFIG=${NVHOOK_TOML:-$work/driver$n/nvhook.toml} "$work/timeit" "$bin/nvhook-runtime" --root "$state" run --bundle "$work/g" "$name" \
        3>>"$work/gpu$n.us" </dev/null
}

echo "nvhook benchmarks: $runs runs per case, $(nproc) CPUs, $(uname -r)"
for s in $sections; do
    case $s in
    start)
        driver 1
        # the plain config (no hook wrapper, no debug log) as a deployment has it
        { cat "$work/driver1/config.toml"; printf 'hook-path = "%s/nvhook"\n' "$bin"; } >"$work/driver1/plain.toml"
        # the floor of any shim-and-hook design: the same shim inserting a hook that is
        # /bin/true (runc's hook machinery, the shim's edit of config.json)
        { cat "$work/driver1/config.toml"; printf 'hook-path = "/bin/true"\n'; } >"$work/driver1/true.toml"
        : >"$work/plain.us"; : >"$work/gpu1.us"; : >"$work/direct.us"; : >"$work/floor.us"; : >"$work/driver1/hook.us"
        i=0
        while [ "$i" -lt "$runs" ]; do
            mkbundle "$work/p" "$work/image"
            "$work/timeit" runc --root "$state" run --bundle "$work/p" p$i 3>>"$work/plain.us" </dev/null
            NVHOOK_TOML=$work/driver1/true.toml gpu_run 1 "$work/image" f$i NVIDIA_VISIBLE_DEVICES=0 NVIDIA_DRIVER_CAPABILITIES=all
            tail -n1 "$work/gpu1.us" >>"$work/floor.us"
            NVHOOK_TOML=$work/driver1/plain.toml gpu_run 1 "$work/image" d$i NVIDIA_VISIBLE_DEVICES=0 NVIDIA_DRIVER_CAPABILITIES=all
            tail -n1 "$work/gpu1.us" >>"$work/direct.us"
            gpu_run 1 "$work/image" g$i NVIDIA_VISIBLE_DEVICES=0 NVIDIA_DRIVER_CAPABILITIES=all
            i=$((i + 1))
        done
        echo "start: container start, 1 GPU, all capabilities"
        line "runc run, no GPU (baseline)" "$work/plain.us"
        line "floor: the shim, a /bin/true hook" "$work/floor.us"
        line "runc run through the shim, 1 GPU" "$work/direct.us"
        ratio "ratio floor / plain start" "$(med "$work/floor.us")" "$(med "$work/plain.us")"
        ratio "ratio GPU start / plain start" "$(med "$work/direct.us")" "$(med "$work/plain.us")"
        ratio "ratio GPU start / floor" "$(med "$work/direct.us")" "$(med "$work/floor.us")"
        echo "  the hook timed by a wrapper (adds its own fork and exec to the start; not in the ratio):"
        line "nvhook prestart (exec to exit)" "$work/driver1/hook.us"
        line "nvhook prestart peak RSS" "$work/driver1/hook.us" 2 KiB
        ratio "ratio hook / plain start" "$(med "$work/driver1/hook.us")" "$(med "$work/plain.us")"
        echo "  hook phases, median us (its debug log):"
        grep -o '[a-z]*_us=[0-9]*' "$work/driver1/nvhook.log" | sed 's/_us=/ /' |
            sort -k1,1 -k2n | awk '{n[$1]++; v[$1, n[$1]] = $2} END {for (k in n) {c = n[k]; m = (c % 2) ? v[k, (c + 1) / 2] : (v[k, c / 2] + v[k, c / 2 + 1]) / 2; printf "    %-9s %6d\n", k, m}}' | sort
        ;;
    shim)
        driver 1
        static=$(scripts/build-static-shim.sh)
        # the floor of any shim that execs runc: a static C program doing only that
        printf '#include <unistd.h>\nint main(int c, char **v) { (void)c; execvp("runc", v); return 127; }\n' >"$work/execwrap.c"
        gcc -O2 -static -o "$work/execwrap" "$work/execwrap.c"
        mkbundle "$work/s" "$work/image"
        sed -i 's|"true"|"sleep", "600"|' "$work/s/config.json"
        runc --root "$state" create --bundle "$work/s" shimbench </dev/null >/dev/null 2>&1
        for f in runc-state shim-state static-state floor-state runc-kill shim-kill static-kill; do : >"$work/$f.us"; done
        i=0
        while [ "$i" -lt "$runs" ]; do
            "$work/timeit" runc --root "$state" state shimbench 3>>"$work/runc-state.us" >/dev/null
            "$work/timeit" "$work/execwrap" --root "$state" state shimbench 3>>"$work/floor-state.us" >/dev/null
            NVHOOK_CONFIG=$work/driver1/nvhook.toml "$work/timeit" "$bin/nvhook-runtime" --root "$state" state shimbench 3>>"$work/shim-state.us" >/dev/null
            NVHOOK_CONFIG=$work/driver1/nvhook.toml "$work/timeit" "$static" --root "$state" state shimbench 3>>"$work/static-state.us" >/dev/null
            "$work/timeit" runc --root "$state" kill shimbench 0 3>>"$work/runc-kill.us"
            NVHOOK_CONFIG=$work/driver1/nvhook.toml "$work/timeit" "$bin/nvhook-runtime" --root "$state" kill shimbench 0 3>>"$work/shim-kill.us"
            NVHOOK_CONFIG=$work/driver1/nvhook.toml "$work/timeit" "$static" --root "$state" kill shimbench 0 3>>"$work/static-kill.us"
            i=$((i + 1))
        done
        runc --root "$state" delete --force shimbench
        echo "shim: pass-through calls"
        line "runc state" "$work/runc-state.us"
        line "exec floor: static C exec of runc, state" "$work/floor-state.us"
        line "nvhook-runtime state (dynamic)" "$work/shim-state.us"
        line "nvhook-runtime state (static, packaged)" "$work/static-state.us"
        line "runc kill ID 0" "$work/runc-kill.us"
        line "nvhook-runtime kill ID 0 (dynamic)" "$work/shim-kill.us"
        line "nvhook-runtime kill ID 0 (static)" "$work/static-kill.us"
        line "nvhook-runtime peak RSS" "$work/shim-state.us" 2 KiB
        ratio "ratio exec floor / runc, state" "$(med "$work/floor-state.us")" "$(med "$work/runc-state.us")"
        ratio "ratio dynamic shim / runc, state" "$(med "$work/shim-state.us")" "$(med "$work/runc-state.us")"
        ratio "ratio static shim / runc, state" "$(med "$work/static-state.us")" "$(med "$work/runc-state.us")"
        ratio "ratio dynamic shim / runc, kill" "$(med "$work/shim-kill.us")" "$(med "$work/runc-kill.us")"
        ratio "ratio static shim / runc, kill" "$(med "$work/static-kill.us")" "$(med "$work/runc-kill.us")"
        ls -l "$bin/nvhook-runtime" "$static" | awk '{printf "  size %-40s %9d bytes\n", $9, $5}'
        ;;
    scaling)
        echo "scaling: the hook with N GPUs, all visible, default capabilities"
        for n in 1 2 8 64; do
            driver $n
            : >"$work/driver$n/hook.us"
        done
        i=0
        while [ "$i" -lt "$runs" ]; do
            for n in 1 2 8 64; do
                gpu_run $n "$work/image" s$n-$i NVIDIA_VISIBLE_DEVICES=all
            done
            i=$((i + 1))
        done
        for n in 1 2 8 64; do
            line "nvhook prestart, $n GPUs" "$work/driver$n/hook.us"
        done
        b=$(med "$work/driver1/hook.us")
        for n in 2 8 64; do
            awk -v a="$(med "$work/driver$n/hook.us")" -v b="$b" -v n="$n" \
                'BEGIN {printf "  %-44s %.2fx (%+.0f us per extra GPU)\n", n " GPUs / 1 GPU", a / b, (a - b) / (n - 1)}'
        done
        ;;
    ldconfig)
        driver 1
        { printf 'ld-cache = "ldconfig"\n'; cat "$work/driver1/nvhook.toml"; } >"$work/driver1/nvhook-ldconfig.toml"
        big=$work/image-big
        rm -rf "$big"; cp -a "$work/image" "$big"
        gcc -shared -fPIC -o "$work/libtiny.so" scripts/fake/lib.c
        k=0
        while [ "$k" -lt 2000 ]; do cp "$work/libtiny.so" "$big/usr/lib/x86_64-linux-gnu/libbench$k.so.1"; k=$((k + 1)); done
        ldconfig -r "$big"
        for f in plain-big nvhook-big ldconfig-big nvhook-small hook-nvhook-big hook-ldconfig-big hook-nvhook-small; do : >"$work/$f.us"; done
        : >"$work/driver1/hook.us"; : >"$work/driver1/nvhook.log"
        i=0
        while [ "$i" -lt "$runs" ]; do
            mkbundle "$work/p" "$big"
            "$work/timeit" runc --root "$state" run --bundle "$work/p" pb$i 3>>"$work/plain-big.us" </dev/null
            gpu_run 1 "$big" nb$i NVIDIA_VISIBLE_DEVICES=0
            tail -n1 "$work/gpu1.us" >>"$work/nvhook-big.us"; tail -n1 "$work/driver1/hook.us" >>"$work/hook-nvhook-big.us"
            NVHOOK_TOML=$work/driver1/nvhook-ldconfig.toml gpu_run 1 "$big" lb$i NVIDIA_VISIBLE_DEVICES=0
            tail -n1 "$work/gpu1.us" >>"$work/ldconfig-big.us"; tail -n1 "$work/driver1/hook.us" >>"$work/hook-ldconfig-big.us"
            gpu_run 1 "$work/image" ns$i NVIDIA_VISIBLE_DEVICES=0
            tail -n1 "$work/driver1/hook.us" >>"$work/hook-nvhook-small.us"
            i=$((i + 1))
        done
        echo "ldconfig: an image with 2000 extra libraries, 1 GPU"
        line "runc run, big image, no GPU (baseline)" "$work/plain-big.us"
        line "through nvhook, ld-cache = nvhook" "$work/nvhook-big.us"
        line "through nvhook, ld-cache = ldconfig" "$work/ldconfig-big.us"
        ratio "ratio nvhook's cache / plain, big image" "$(med "$work/nvhook-big.us")" "$(med "$work/plain-big.us")"
        ratio "ratio ldconfig / plain, big image" "$(med "$work/ldconfig-big.us")" "$(med "$work/plain-big.us")"
        line "hook, nvhook's cache, small image" "$work/hook-nvhook-small.us"
        line "hook, nvhook's cache, big image" "$work/hook-nvhook-big.us"
        line "hook, ldconfig, big image" "$work/hook-ldconfig-big.us"
        line "hook peak RSS, nvhook's cache, big image" "$work/hook-nvhook-big.us" 2 KiB
        ratio "ratio hook big / small (nvhook's cache)" "$(med "$work/hook-nvhook-big.us")" "$(med "$work/hook-nvhook-small.us")"
        echo "  the cache phase (ldconfig_us), median us (debug log):"
        grep -o "ldconfig_us=[0-9]*" "$work/driver1/nvhook.log" | cut -d= -f2 | awk 'NR % 3 == 1' >"$work/ph-nb.us"
        grep -o "ldconfig_us=[0-9]*" "$work/driver1/nvhook.log" | cut -d= -f2 | awk 'NR % 3 == 2' >"$work/ph-lb.us"
        grep -o "ldconfig_us=[0-9]*" "$work/driver1/nvhook.log" | cut -d= -f2 | awk 'NR % 3 == 0' >"$work/ph-ns.us"
        line "nvhook's cache, big image" "$work/ph-nb.us"
        line "ldconfig, big image" "$work/ph-lb.us"
        line "nvhook's cache, small image" "$work/ph-ns.us"
        ;;
    hostcache)
        driver 1
        big=$work/driver-bigcache
        if [ ! -d "$big" ]; then
            cp -a "$work/driver1" "$big"
            gcc -shared -fPIC -o "$work/libtiny.so" scripts/fake/lib.c
            k=0
            while [ "$k" -lt 2000 ]; do cp "$work/libtiny.so" "$big/root/usr/lib/x86_64-linux-gnu/libhost$k.so.1"; k=$((k + 1)); done
            ldconfig -r "$big/root"
            sed "s|$work/driver1|$big|g" "$work/driver1/nvhook.toml" >"$big/nvhook.toml"
        fi
        mkbundle "$work/p" "$work/image" NVIDIA_VISIBLE_DEVICES=0 NVIDIA_DRIVER_CAPABILITIES=all
        printf '{"ociVersion":"1.0.2","id":"plan","status":"creating","pid":1,"bundle":"%s"}' "$work/p" >"$work/p/state.json"
        : >"$work/plan-small.us"; : >"$work/plan-big.us"
        i=0
        while [ "$i" -lt "$runs" ]; do
            "$work/timeit" "$bin/nvhook" --config "$work/driver1/nvhook.toml" plan --state "$work/p/state.json" 3>>"$work/plan-small.us" >/dev/null
            "$work/timeit" "$bin/nvhook" --config "$big/nvhook.toml" plan --state "$work/p/state.json" 3>>"$work/plan-big.us" >/dev/null
            i=$((i + 1))
        done
        echo "hostcache: nvhook plan, host ld.so.cache with $(ldconfig -r "$big/root" -p 2>/dev/null | head -n1 | awk '{print $1}') entries vs the synthetic driver's"
        line "nvhook plan, small host cache" "$work/plan-small.us"
        line "nvhook plan, 2000 more host libraries" "$work/plan-big.us"
        line "nvhook plan peak RSS, big cache" "$work/plan-big.us" 2 KiB
        ratio "ratio big / small" "$(med "$work/plan-big.us")" "$(med "$work/plan-small.us")"
        ;;
    cgroup)
        driver 1
        # v2 with and without the device program cache (pinned on a bpffs of the run's own)
        mkdir -p "$work/bpffs"
        mountpoint -q "$work/bpffs" || mount -t bpf bpf "$work/bpffs"
        { printf 'device-program-cache = ""\n'; cat "$work/driver1/nvhook.toml"; } >"$work/driver1/nocache.toml"
        { printf 'device-program-cache = "%s/nvhook"\n' "$work/bpffs"; cat "$work/driver1/nvhook.toml"; } >"$work/driver1/cache.toml"
        : >"$work/driver1/nvhook.log"; : >"$work/cg-order"
        v2run() { # CONFIG NAME
            mkbundle "$work/c2" "$work/image" NVIDIA_VISIBLE_DEVICES=0
            NVHOOK_CONFIG=$1 unshare -m --propagation private sh -c \
                'mount --bind /sys/fs/cgroup/unified /sys/fs/cgroup 2>/dev/null; exec "$@"' sh \
                "$bin/nvhook-runtime" --root "$state" run --bundle "$work/c2" "$2" </dev/null >/dev/null
        }
        i=0
        while [ "$i" -lt "$runs" ]; do
            mkbundle "$work/c1" "$work/image" NVIDIA_VISIBLE_DEVICES=0
            NVHOOK_CONFIG=$work/driver1/nocache.toml "$bin/nvhook-runtime" --root "$state" run --bundle "$work/c1" c1-$i </dev/null >/dev/null
            echo v1 >>"$work/cg-order"
            v2run "$work/driver1/nocache.toml" c2-$i
            echo v2 >>"$work/cg-order"
            v2run "$work/driver1/cache.toml" c3-$i
            echo v2c >>"$work/cg-order"
            i=$((i + 1))
        done
        grep -o 'cgroup_us=[0-9]*' "$work/driver1/nvhook.log" | cut -d= -f2 >"$work/cg-all.us"
        for k in v1 v2 v2c; do
            paste -d' ' "$work/cg-order" "$work/cg-all.us" | awk -v k=$k '$1 == k {print $2}' >"$work/cg-$k.us"
        done
        hits=$(grep -c 'device_programs_cached=1' "$work/driver1/nvhook.log" || true)
        echo "cgroup: the hook's device cgroup phase, 1 GPU (nvidiactl, nvidia0, uvm, uvm-tools)"
        line "cgroup v1 (devices.allow)" "$work/cg-v1.us"
        line "cgroup v2 (eBPF program swap, loaded)" "$work/cg-v2.us"
        line "cgroup v2 (program from the cache)" "$work/cg-v2c.us"
        echo "  ($hits of $runs cached starts found their program pinned)"
        ratio "ratio v2 loaded / v1" "$(med "$work/cg-v2.us")" "$(med "$work/cg-v1.us")"
        ratio "ratio v2 cached / v1" "$(med "$work/cg-v2c.us")" "$(med "$work/cg-v1.us")"
        ;;
    nvidia)
        [ -n "$nvidia" ] || { echo "bench: section nvidia needs --nvidia-runtime DIR" >&2; exit 2; }
        driver 1
        nv=$work/nvidia
        rm -rf "$nv"; mkdir -p "$nv/spec"
        # the spec as an operator makes it (nvidia-cdi-hook's path, found on PATH, goes in it)
        PATH=$nvidia:$PATH "$nvidia/nvidia-ctk" cdi generate --driver-root "$work/driver1/root" \
            --dev-root "$work/driver1" --ldconfig-path /sbin/ldconfig --output "$nv/spec/nvidia.yaml" \
            >"$nv/generate.log" 2>&1 || { cat "$nv/generate.log" >&2; exit 1; }
        cat >"$nv/config.toml" <<EOF
[nvidia-container-cli]
root = "$work/driver1/root"
ldconfig = "@/sbin/ldconfig"
[nvidia-ctk]
path = "$nvidia/nvidia-ctk"
[nvidia-container-runtime]
log-level = "info"
mode = "cdi"
runtimes = ["runc"]
[nvidia-container-runtime.modes.cdi]
default-kind = "nvidia.com/gpu"
spec-dirs = ["$nv/spec"]
EOF
        : >"$work/create-runc.us"; : >"$work/create-nvhook.us"; : >"$work/create-nvidia.us"
        i=0
        while [ "$i" -lt "$runs" ]; do
            for c in runc nvhook nvidia; do
                mkbundle "$work/cr" "$work/image" NVIDIA_VISIBLE_DEVICES=0 NVIDIA_DRIVER_CAPABILITIES=all
                case $c in
                runc) "$work/timeit" runc --root "$state" create --bundle "$work/cr" cr$i </dev/null 3>>"$work/create-runc.us" ;;
                nvhook) NVHOOK_CONFIG=$work/driver1/config.toml "$work/timeit" "$bin/nvhook-runtime" --root "$state" \
                    create --bundle "$work/cr" cr$i </dev/null 3>>"$work/create-nvhook.us" ;;
                nvidia) NVIDIA_CTK_CONFIG_FILE_PATH=$nv/config.toml "$work/timeit" "$nvidia/nvidia-container-runtime" --root "$state" \
                    create --bundle "$work/cr" cr$i </dev/null 3>>"$work/create-nvidia.us" ;;
                esac
                # each must have done its work: its hook in the rewritten config.json
                case $c in
                nvhook) grep -q "\"$bin/nvhook\"" "$work/cr/config.json" ;;
                nvidia) grep -q nvidia-cdi-hook "$work/cr/config.json" ;;
                esac || { echo "bench: $c create injected nothing" >&2; exit 1; }
                runc --root "$state" start cr$i
                runc --root "$state" delete --force cr$i
            done
            i=$((i + 1))
        done
        echo "nvidia: container create, same bundle, GPU 0, all capabilities ($("$nvidia/nvidia-container-runtime" --version | head -n1))"
        line "runc create, no GPU (baseline)" "$work/create-runc.us"
        line "nvhook-runtime create (shim + hook)" "$work/create-nvhook.us"
        line "nvidia-container-runtime create (CDI)" "$work/create-nvidia.us"
        ratio "ratio nvhook / runc" "$(med "$work/create-nvhook.us")" "$(med "$work/create-runc.us")"
        ratio "ratio NVIDIA CDI / runc" "$(med "$work/create-nvidia.us")" "$(med "$work/create-runc.us")"
        ratio "ratio NVIDIA CDI / nvhook" "$(med "$work/create-nvidia.us")" "$(med "$work/create-nvhook.us")"
        ;;
    merge)
        # no container: the image cache's merge alone, worst case against its baseline
        RUNS=$runs cargo bench -q --bench ldcache_merge
        ;;
    *) echo "bench: unknown section $s" >&2; exit 2 ;;
    esac
done
