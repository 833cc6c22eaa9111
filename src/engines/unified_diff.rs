//! A unified diff (hunks with three lines of context, `-` before `+`) of two texts, so
//! `nvhook install --dry-run` shows an operator exactly what would change, in the form
//! `patch` and code review tools read.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Same,
    Del,
    Add,
}

/// Lines of context around each change.
const CONTEXT: usize = 3;

/// The edit script from `old` to `new` (longest common subsequence; configuration files
/// are small), deletions before insertions within a change.
fn script<'a>(old: &[&'a str], new: &[&'a str]) -> Vec<(Op, &'a str)> {
    let (n, m) = (old.len(), new.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if old[i] == new[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && old[i] == new[j] {
            out.push((Op::Same, old[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push((Op::Del, old[i]));
            i += 1;
        } else {
            out.push((Op::Add, new[j]));
            j += 1;
        }
    }
    out
}

/// `@@` range: 1-based start and count; an empty range names the line before it.
fn range(start: usize, count: usize) -> String {
    let first = if count == 0 { start } else { start + 1 };
    if count == 1 {
        format!("{first}")
    } else {
        format!("{first},{count}")
    }
}

/// The unified diff of `old` and `new` under the labels (`---`/`+++` lines); empty when
/// the texts are equal.
pub fn unified(old_label: &str, new_label: &str, old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let ops = script(&a, &b);
    let changed: Vec<usize> = (0..ops.len()).filter(|&k| ops[k].0 != Op::Same).collect();
    if changed.is_empty() {
        return String::new();
    }
    // Group changes whose context would touch or overlap.
    let mut groups: Vec<(usize, usize)> = Vec::new();
    for &k in &changed {
        match groups.last_mut() {
            Some((_, end)) if k <= *end + 2 * CONTEXT + 1 => *end = k,
            _ => groups.push((k, k)),
        }
    }
    let mut out = format!("--- {old_label}\n+++ {new_label}\n");
    // Line numbers before each op.
    let mut pos = Vec::with_capacity(ops.len() + 1);
    let (mut x, mut y) = (0usize, 0usize);
    for (op, _) in &ops {
        pos.push((x, y));
        match op {
            Op::Same => {
                x += 1;
                y += 1;
            }
            Op::Del => x += 1,
            Op::Add => y += 1,
        }
    }
    pos.push((x, y));
    for (first, last) in groups {
        let lo = first.saturating_sub(CONTEXT);
        let hi = (last + CONTEXT + 1).min(ops.len());
        let (a0, b0) = pos[lo];
        let (a1, b1) = pos[hi];
        out.push_str(&format!(
            "@@ -{} +{} @@\n",
            range(a0, a1 - a0),
            range(b0, b1 - b0)
        ));
        for (op, line) in &ops[lo..hi] {
            let mark = match op {
                Op::Same => ' ',
                Op::Del => '-',
                Op::Add => '+',
            };
            out.push(mark);
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hunks_with_context() {
        let old: String = (1..=20).map(|i| format!("line {i}\n")).collect();
        let new = old
            .replace("line 5\n", "line five\n")
            .replace("line 18\n", "line 18\nline 18b\n");
        let d = unified("a", "b", &old, &new);
        assert_eq!(
            d,
            "--- a\n+++ b\n@@ -2,7 +2,7 @@\n line 2\n line 3\n line 4\n-line 5\n+line five\n line 6\n line 7\n line 8\n@@ -16,5 +16,6 @@\n line 16\n line 17\n line 18\n+line 18b\n line 19\n line 20\n"
        );
        assert_eq!(unified("a", "b", &old, &old), "");
    }

    #[test]
    fn files_appearing_and_vanishing() {
        assert_eq!(
            unified("/dev/null", "f", "", "x\ny\n"),
            "--- /dev/null\n+++ f\n@@ -0,0 +1,2 @@\n+x\n+y\n"
        );
        assert_eq!(
            unified("f", "/dev/null", "x\n", ""),
            "--- f\n+++ /dev/null\n@@ -1 +0,0 @@\n-x\n"
        );
    }

    /// What `patch` would do with the diff gives back the new text.
    #[test]
    fn applies_with_patch() {
        let Some(_) = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|d| d.join("patch"))
            .find(|p| p.is_file())
        else {
            panic!("patch(1) is needed for this test (Debian package patch)");
        };
        let d = tempfile::tempdir().unwrap();
        let old = "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\nk\n";
        let new = "a\nB\nc\nd\ne\nf\ng\nh\ni\nk\nl\n";
        std::fs::write(d.path().join("f"), old).unwrap();
        std::fs::write(d.path().join("p"), unified("f", "f", old, new)).unwrap();
        let st = std::process::Command::new("patch")
            .current_dir(d.path())
            .args(["-s", "f", "p"])
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(std::fs::read_to_string(d.path().join("f")).unwrap(), new);
    }
}
