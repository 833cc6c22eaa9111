//! The tree is the pipeline: this test keeps it so. It reads the `crate::` and `super::`
//! paths of every source file under `src/` (test modules aside) and fails on any
//! import circle between modules, on any arrow between stages that goes up the
//! pipeline (ARCHITECTURE.md's order), on a stage folder whose `mod.rs` does not open
//! with what the stage takes and gives, and on a function of more than 80 lines (in the
//! library and both binaries; a longer one reads better as its named steps).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The stages in pipeline order: a stage may use only stages before it. `apply` and
/// `engines` share a rank: neither may use the other.
const STAGES: &[(&str, u32)] = &[
    ("common", 0),
    ("container", 1),
    ("host", 2),
    ("plan", 3),
    ("apply", 4),
    ("engines", 4),
    ("pipeline", 5),
    ("doctor", 6),
];

fn src() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Module path (`host::driver`, `plan`) of every file under `src/` but `lib.rs`.
fn modules() -> BTreeMap<String, String> {
    fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                walk(&p, &format!("{prefix}{name}::"), out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let m = match name.as_str() {
                    "mod" => prefix.trim_end_matches("::").to_string(),
                    "lib" if prefix.is_empty() => continue,
                    _ => format!("{prefix}{name}"),
                };
                out.insert(m, std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&src(), "", &mut out);
    out
}

/// The code without test modules and comments.
fn code(text: &str) -> String {
    let end = text.find("#[cfg(test)]\nmod tests").unwrap_or(text.len());
    text[..end]
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The modules `m` refers to: the longest known module prefix of each path.
fn uses(m: &str, text: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let code = code(text);
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let parent = m.rsplit_once("::").map(|(p, _)| p.to_string());
    let mut paths = Vec::new();
    for (root, base) in [("crate::", Some(String::new())), ("super::", parent)] {
        let Some(base) = base else { continue };
        let mut rest = code.as_str();
        while let Some(i) = rest.find(root) {
            let before = rest[..i].chars().last();
            rest = &rest[i + root.len()..];
            if before.is_some_and(|c| is_ident(c) || c == ':') {
                continue;
            }
            // `crate::{a, b::c}` names several paths.
            let tails: Vec<String> = if let Some(group) = rest.strip_prefix('{') {
                let close = group.find('}').unwrap_or(group.len());
                group[..close]
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .collect()
            } else {
                let end = rest
                    .find(|c: char| !(is_ident(c) || c == ':'))
                    .unwrap_or(rest.len());
                vec![rest[..end].to_string()]
            };
            for t in tails {
                let segs: Vec<&str> = t.split("::").filter(|s| !s.is_empty()).collect();
                let full: Vec<String> = if base.is_empty() {
                    segs.iter().map(|s| s.to_string()).collect()
                } else {
                    std::iter::once(base.clone())
                        .chain(segs.iter().map(|s| s.to_string()))
                        .collect()
                };
                paths.push(full);
            }
        }
    }
    let mut out = BTreeSet::new();
    for full in paths {
        let mut best = None;
        for n in 1..=full.len() {
            let cand = full[..n].join("::");
            if known.contains(&cand) {
                best = Some(cand);
            }
        }
        if let Some(b) = best.filter(|b| b != m) {
            out.insert(b);
        }
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules();
    let known: BTreeSet<String> = mods.keys().cloned().collect();
    mods.iter()
        .map(|(m, text)| (m.clone(), uses(m, text, &known)))
        .collect()
}

/// One circle of `g`, as the modules along it, if there is any.
fn circle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for d in g.get(n).into_iter().flatten() {
            match state.get(d.as_str()).copied().unwrap_or(0) {
                1 => {
                    let at = stack.iter().position(|s| s == d).unwrap();
                    let mut c = stack[at..].to_vec();
                    c.push(d.clone());
                    return Some(c);
                }
                0 => {
                    if let Some(c) = visit(d, g, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in g.keys() {
        if state.get(n.as_str()).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(n, g, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

fn stage_of(m: &str) -> &str {
    m.split("::").next().unwrap()
}

#[test]
fn no_import_circle_between_modules() {
    let g = graph();
    assert!(g.len() > 20, "modules found: {:?}", g.keys());
    if let Some(c) = circle(&g) {
        panic!("import circle: {}", c.join(" -> "));
    }
}

#[test]
fn stages_depend_only_on_earlier_stages() {
    let rank: BTreeMap<&str, u32> = STAGES.iter().copied().collect();
    let mut wrong = Vec::new();
    for (m, deps) in graph() {
        let from = stage_of(&m);
        let r = *rank
            .get(from)
            .unwrap_or_else(|| panic!("{m}: not in a stage of ARCHITECTURE.md"));
        for d in deps {
            let to = stage_of(&d);
            if to != from && rank[to] >= r {
                wrong.push(format!("{m} -> {d}"));
            }
        }
    }
    assert!(wrong.is_empty(), "arrows against the pipeline: {wrong:#?}");
}

#[test]
fn each_stage_says_what_it_takes_and_gives() {
    for (stage, _) in STAGES {
        let dir = src().join(stage);
        let file = if dir.is_dir() {
            dir.join("mod.rs")
        } else {
            src().join(format!("{stage}.rs"))
        };
        let text = std::fs::read_to_string(&file).unwrap();
        let doc: String = text
            .lines()
            .take_while(|l| l.starts_with("//!"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            doc.contains("Takes") && doc.contains("Gives"),
            "{} must open with what the stage takes and gives",
            file.display()
        );
    }
}

#[test]
fn no_function_over_80_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<(String, String)> = modules()
        .into_iter()
        .map(|(m, text)| (format!("src: {m}"), text))
        .collect();
    for bin in ["hook/src/main.rs", "shim/src/main.rs", "shim/src/args.rs"] {
        files.push((bin.into(), std::fs::read_to_string(root.join(bin)).unwrap()));
    }
    let mut long = Vec::new();
    for (name, text) in files {
        for (f, n) in long_functions(&text, 80) {
            long.push(format!("{name}: fn {f}: {n} lines"));
        }
    }
    assert!(long.is_empty(), "split these into named steps: {long:#?}");
}

/// Functions (outside test modules) longer than `max` lines: from the `fn` line to the
/// closing brace at the same indent.
fn long_functions(text: &str, max: usize) -> Vec<(String, usize)> {
    let end = text.find("#[cfg(test)]\nmod tests").unwrap_or(text.len());
    let lines: Vec<&str> = text[..end].lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_start();
        let indent = l.len() - t.len();
        let sig = [
            "pub fn ",
            "fn ",
            "pub(crate) fn ",
            "unsafe fn ",
            "pub unsafe fn ",
            "pub extern \"C\" fn ",
            "const fn ",
            "pub const fn ",
        ]
        .iter()
        .find_map(|p| t.strip_prefix(p));
        let Some(sig) = sig else { continue };
        if l.trim_end().ends_with(';') {
            continue;
        }
        let close = " ".repeat(indent) + "}";
        if let Some(j) = lines[i + 1..].iter().position(|x| *x == close) {
            if j + 2 > max {
                let name = sig.split(['(', '<']).next().unwrap_or(sig).to_string();
                out.push((name, j + 2));
            }
        }
    }
    out
}

/// The checker itself finds a circle, through `super::` and grouped imports too.
#[test]
fn the_check_sees_circles() {
    let known: BTreeSet<String> = ["a", "a::x", "a::y", "b"].map(String::from).into();
    let ux = uses(
        "a::x",
        "use super::y::Thing;\nfn f() { crate::{b, a::y}; }",
        &known,
    );
    assert_eq!(ux, ["a::y", "b"].map(String::from).into());
    let uy = uses(
        "a::y",
        "// crate::b in a comment\nuse crate::a::x::T;",
        &known,
    );
    assert_eq!(uy, ["a::x"].map(String::from).into());
    let g: BTreeMap<String, BTreeSet<String>> =
        [("a::x".to_string(), ux), ("a::y".to_string(), uy)].into();
    assert!(circle(&g).is_some());
    // and a long function
    let body = "    x();\n".repeat(81);
    let text = format!("fn short() {{\n}}\n\npub fn long(a: u8) {{\n{body}}}\n");
    assert_eq!(long_functions(&text, 80), vec![("long".to_string(), 83)]);
}
