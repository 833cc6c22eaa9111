//! The image cache's merge at its worst (issue: a 16 MiB image cache whose entries share
//! their names with 4096 CUDA compat SONAMEs took 5.8 s when each old entry was checked
//! against every new one), against a baseline of the same size whose names are all
//! different, in the same process, interleaved. `scripts/bench.sh merge` runs it.

use nvhook::apply::ldcache_write::{Cache, RawEntry};
use nvhook::host::ldcache::FLAGS_NATIVE;
use std::time::{Duration, Instant};

const COMPAT: usize = 4096;

/// About 16 MiB once written: `n` entries, each an entry record and two strings.
fn image_cache(shared_names: bool) -> Cache {
    let n = 200_000;
    let entries = (0..n)
        .map(|i| {
            let key = if shared_names {
                format!("libcompat{}.so.1", i % COMPAT)
            } else {
                format!("libimage{i}.so.1")
            };
            RawEntry::new(
                FLAGS_NATIVE,
                &key,
                &format!("/opt/image/dir{}/{key}", i / COMPAT),
            )
        })
        .collect();
    let mut c = Cache {
        entries,
        ..Default::default()
    };
    c.merge(Vec::new(), &[], &|_| 0); // in the loader's order, as a real cache is
    c
}

fn compat_entries() -> Vec<RawEntry> {
    (0..COMPAT)
        .map(|i| {
            let key = format!("libcompat{i}.so.1");
            RawEntry::new(FLAGS_NATIVE, &key, &format!("/usr/local/cuda/compat/{key}"))
        })
        .collect()
}

fn time(base: &Cache) -> Duration {
    let mut c = base.clone();
    let new = compat_entries();
    let clock = Instant::now();
    c.merge(new, &[], &|d| {
        usize::from(d.starts_with(b"/usr/local/cuda"))
    });
    clock.elapsed()
}

fn main() {
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let worst = image_cache(true);
    let base = image_cache(false);
    let bytes = worst.to_bytes("bench").map(|b| b.len()).unwrap_or(0);
    let (mut w, mut b) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        w.push(time(&worst));
        b.push(time(&base));
    }
    w.sort();
    b.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "merge of {COMPAT} compat names into a {:.1} MiB image cache ({} entries), {runs} runs: \
         names shared with the compat libraries (worst) median {:.1} ms [{:.1}-{:.1}], \
         all names distinct (baseline) median {:.1} ms [{:.1}-{:.1}]: {:.2}x",
        bytes as f64 / (1 << 20) as f64,
        worst.entries.len(),
        ms(w[runs / 2]),
        ms(w[0]),
        ms(w[runs - 1]),
        ms(b[runs / 2]),
        ms(b[0]),
        ms(b[runs - 1]),
        ms(w[runs / 2]) / ms(b[runs / 2]),
    );
}
