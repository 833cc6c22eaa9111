//! `NVIDIA_REQUIRE_*` constraints, with the meaning NVIDIA's toolkit gives them: each
//! variable must hold; inside one, spaces separate alternatives and commas join terms;
//! a term is `key op value` with key `cuda`, `driver`, `arch` or `brand`.

use serde::Serialize;
use std::cmp::Ordering;
use std::fmt;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("{var}: cannot parse requirement {term:?}: {why}")]
    Parse {
        var: String,
        term: String,
        why: &'static str,
    },
    #[error("unsatisfied requirement {var}={value:?}: {found}")]
    Unmet {
        var: String,
        value: String,
        found: String,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Key {
    Cuda,
    Driver,
    Arch,
    Brand,
}

impl Key {
    fn name(self) -> &'static str {
        match self {
            Key::Cuda => "cuda",
            Key::Driver => "driver",
            Key::Arch => "arch",
            Key::Brand => "brand",
        }
    }
    /// Whether the fact comes from NVML rather than `/proc`.
    pub fn needs_nvml(self) -> bool {
        matches!(self, Key::Cuda | Key::Arch | Key::Brand)
    }
    /// Per-GPU facts pass when the container has no GPU.
    fn per_gpu(self) -> bool {
        matches!(self, Key::Arch | Key::Brand)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Op {
    #[serde(rename = "=")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
}

impl Op {
    fn holds(self, o: Ordering) -> bool {
        match self {
            Op::Eq => o == Ordering::Equal,
            Op::Ne => o != Ordering::Equal,
            Op::Lt => o == Ordering::Less,
            Op::Le => o != Ordering::Greater,
            Op::Gt => o == Ordering::Greater,
            Op::Ge => o != Ordering::Less,
        }
    }
    fn text(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Term {
    pub key: Key,
    pub op: Op,
    pub value: String,
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.key.name(), self.op.text(), self.value)
    }
}

/// One `NVIDIA_REQUIRE_*` variable: alternatives (OR) of conjunctions (AND).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Requirement {
    pub var: String,
    pub value: String,
    pub any_of: Vec<Vec<Term>>,
}

/// A driver version: two or three dot-separated decimal numbers.
pub fn is_version(t: &str) -> bool {
    let parts: Vec<&str> = t.split('.').collect();
    (2..=3).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 6 && p.bytes().all(|c| c.is_ascii_digit()))
}

/// Dotted decimal version compared numerically, trailing `.0` parts ignored.
pub fn compare_versions(a: &str, b: &str) -> Option<Ordering> {
    let parse = |s: &str| -> Option<Vec<u64>> {
        let mut v: Vec<u64> = s
            .split('.')
            .map(|p| p.parse().ok())
            .collect::<Option<_>>()?;
        while v.len() > 1 && v.last() == Some(&0) {
            v.pop();
        }
        Some(v)
    };
    Some(parse(a)?.cmp(&parse(b)?))
}

fn parse_term(var: &str, t: &str) -> Result<Term> {
    let err = |why| Error::Parse {
        var: var.into(),
        term: t.into(),
        why,
    };
    let pos = t
        .find(['=', '!', '<', '>'])
        .ok_or_else(|| err("no operator"))?;
    let (k, rest) = t.split_at(pos);
    let (op, value) = [
        ("!=", Op::Ne),
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("=", Op::Eq),
        ("<", Op::Lt),
        (">", Op::Gt),
    ]
    .iter()
    .find_map(|(s, op)| rest.strip_prefix(s).map(|v| (*op, v)))
    .ok_or_else(|| err("bad operator"))?;
    let key = match k.trim().to_ascii_lowercase().as_str() {
        "cuda" => Key::Cuda,
        "driver" => Key::Driver,
        "arch" => Key::Arch,
        "brand" => Key::Brand,
        _ => return Err(err("unknown key (cuda, driver, arch, brand)")),
    };
    let value = value.trim().to_string();
    if value.is_empty() {
        return Err(err("empty value"));
    }
    if key == Key::Brand {
        if !matches!(op, Op::Eq | Op::Ne) {
            return Err(err("brand takes only = or !="));
        }
    } else if compare_versions(&value, &value).is_none() {
        return Err(err("not a dotted version"));
    }
    Ok(Term { key, op, value })
}

impl Requirement {
    pub fn parse(var: &str, value: &str) -> Result<Requirement> {
        let mut any_of = Vec::new();
        for alt in value.split_whitespace() {
            let terms = alt
                .split(',')
                .filter(|t| !t.is_empty())
                .map(|t| parse_term(var, t))
                .collect::<Result<Vec<_>>>()?;
            if !terms.is_empty() {
                any_of.push(terms);
            }
        }
        Ok(Requirement {
            var: var.into(),
            value: value.into(),
            any_of,
        })
    }

    pub fn keys(&self) -> impl Iterator<Item = Key> + '_ {
        self.any_of.iter().flatten().map(|t| t.key)
    }
}

/// Is the string a Go `strconv.ParseBool` true?
fn parse_bool_true(s: &str) -> bool {
    matches!(s, "1" | "t" | "T" | "TRUE" | "true" | "True")
}

/// The requirements of a container's environment (none when disabled).
pub fn from_env(env: &[String], legacy_cuda: bool) -> Result<Vec<Requirement>> {
    if crate::container::request::getenv(env, "NVIDIA_DISABLE_REQUIRE").is_some_and(parse_bool_true)
    {
        return Ok(Vec::new());
    }
    let mut seen = std::collections::BTreeMap::new();
    for kv in env {
        let Some((k, v)) = kv.split_once('=') else {
            continue;
        };
        if k.starts_with("NVIDIA_REQUIRE_") && !k.starts_with("NVIDIA_REQUIRE_JETPACK") {
            seen.insert(k.to_string(), v.to_string()); // last assignment wins
        }
    }
    let mut out = seen
        .iter()
        .map(|(k, v)| Requirement::parse(k, v))
        .collect::<Result<Vec<_>>>()?;
    if legacy_cuda {
        if let Some(v) =
            crate::container::request::getenv(env, crate::container::request::CUDA_VERSION)
        {
            let mm: Vec<&str> = v.split('.').take(2).collect();
            if mm.len() == 2 && mm.iter().all(|p| p.parse::<u32>().is_ok()) {
                let value = format!("cuda>={}", mm.join("."));
                out.push(Requirement::parse("CUDA_VERSION", &value)?);
            }
        }
    }
    Ok(out.into_iter().filter(|r| !r.any_of.is_empty()).collect())
}

/// Facts about the host and each visible GPU that requirements are checked against.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Facts {
    pub cuda: Option<String>,
    pub driver: String,
    /// (arch, brand) per visible GPU.
    pub gpus: Vec<GpuFacts>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct GpuFacts {
    pub bus_id: String,
    pub arch: Option<String>,
    pub brand: Option<String>,
}

fn term_holds(t: &Term, f: &Facts, gpu: Option<&GpuFacts>) -> bool {
    let version = |have: Option<&str>| {
        have.and_then(|h| compare_versions(h, &t.value))
            .is_some_and(|o| t.op.holds(o))
    };
    match t.key {
        Key::Cuda => version(f.cuda.as_deref()),
        Key::Driver => version(Some(&f.driver)),
        Key::Arch => gpu.is_none_or(|g| version(g.arch.as_deref())),
        Key::Brand => gpu.is_none_or(|g| {
            let eq = g
                .brand
                .as_deref()
                .is_some_and(|b| b.eq_ignore_ascii_case(&t.value));
            if t.op == Op::Eq {
                eq
            } else {
                !eq
            }
        }),
    }
}

fn describe(f: &Facts) -> String {
    let mut s = format!("driver {}", f.driver);
    if let Some(c) = &f.cuda {
        s.push_str(&format!(", cuda {c}"));
    }
    for g in &f.gpus {
        s.push_str(&format!(
            ", GPU {} arch {} brand {}",
            g.bus_id,
            g.arch.as_deref().unwrap_or("?"),
            g.brand.as_deref().unwrap_or("?")
        ));
    }
    s
}

/// Checks every requirement; each must hold for every visible GPU (for the host facts
/// alone when there is none).
pub fn check(reqs: &[Requirement], f: &Facts) -> Result<()> {
    for r in reqs {
        let per_gpu = r.keys().any(Key::per_gpu);
        let gpus: Vec<Option<&GpuFacts>> = if per_gpu && !f.gpus.is_empty() {
            f.gpus.iter().map(Some).collect()
        } else {
            vec![None]
        };
        for g in gpus {
            let ok = r
                .any_of
                .iter()
                .any(|all| all.iter().all(|t| term_holds(t, f, g)));
            if !ok {
                let found = match g {
                    Some(g) => describe(&Facts {
                        gpus: vec![g.clone()],
                        ..f.clone()
                    }),
                    None => describe(&Facts {
                        gpus: vec![],
                        ..f.clone()
                    }),
                };
                return Err(Error::Unmet {
                    var: r.var.clone(),
                    value: r.value.clone(),
                    found,
                });
            }
        }
    }
    Ok(())
}

/// Whether any requirement needs a fact only NVML knows.
pub fn needs_nvml(reqs: &[Requirement]) -> bool {
    reqs.iter().flat_map(|r| r.keys()).any(Key::needs_nvml)
}

/// NVML brand numbers to the names requirements use (libnvidia-container's names).
pub fn brand_name(n: u32) -> &'static str {
    const NAMES: [&str; 17] = [
        "unknown",
        "quadro",
        "tesla",
        "nvs",
        "grid",
        "geforce",
        "titan",
        "vapps",
        "vpc",
        "vcs",
        "vws",
        "cloudgaming",
        "quadrortx",
        "nvidiartx",
        "nvidia",
        "geforcertx",
        "titanrtx",
    ];
    NAMES.get(n as usize).copied().unwrap_or("unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn facts() -> Facts {
        Facts {
            cuda: Some("12.4".into()),
            driver: "550.54.14".into(),
            gpus: vec![
                GpuFacts {
                    bus_id: "0000:18:00.0".into(),
                    arch: Some("9.0".into()),
                    brand: Some("tesla".into()),
                },
                GpuFacts {
                    bus_id: "0000:1b:00.0".into(),
                    arch: Some("8.0".into()),
                    brand: Some("geforce".into()),
                },
            ],
        }
    }

    #[test]
    fn versions() {
        assert_eq!(compare_versions("12.4", "12.4.0"), Some(Ordering::Equal));
        assert_eq!(compare_versions("12.10", "12.9"), Some(Ordering::Greater));
        assert_eq!(
            compare_versions("550.54.14", "550.100"),
            Some(Ordering::Less)
        );
        assert_eq!(compare_versions("x", "1"), None);
    }

    #[test]
    fn parse_forms() {
        let r = Requirement::parse(
            "NVIDIA_REQUIRE_CUDA",
            "cuda>=11.0 brand=tesla,driver>=450 brand=quadro,driver>=450",
        )
        .unwrap();
        assert_eq!(r.any_of.len(), 3);
        assert_eq!(
            r.any_of[1][1],
            Term {
                key: Key::Driver,
                op: Op::Ge,
                value: "450".into()
            }
        );
        assert!(
            Requirement::parse("X", "CUDA>=11").is_ok(),
            "keys are case-insensitive"
        );
        for bad in ["cuda~11", "gpu>=1", "cuda>=", "brand>tesla", "cuda>=abc"] {
            assert!(Requirement::parse("X", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn evaluation() {
        let f = facts();
        let ok = |v: &str| check(&[Requirement::parse("NVIDIA_REQUIRE_X", v).unwrap()], &f);
        assert!(ok("cuda>=12.0").is_ok());
        assert!(ok("cuda>=12.5").is_err());
        assert!(ok("cuda>=12.5 driver>=550").is_ok(), "OR");
        assert!(ok("cuda>=12.0,driver>=560").is_err(), "AND");
        assert!(ok("arch>=8.0").is_ok());
        let e = ok("arch>=9.0").unwrap_err();
        assert!(
            e.to_string().contains("arch 8.0") && e.to_string().contains("NVIDIA_REQUIRE_X"),
            "{e}"
        );
        assert!(ok("brand=tesla brand=geforce").is_ok(), "per GPU");
        assert!(ok("brand!=geforce").is_err());
        let no_gpu = Facts {
            gpus: vec![],
            ..f.clone()
        };
        assert!(
            check(&[Requirement::parse("R", "arch>=10.0").unwrap()], &no_gpu).is_ok(),
            "no device: arch passes"
        );
    }

    #[test]
    fn from_environment() {
        let r = from_env(
            &env(&[
                "NVIDIA_REQUIRE_CUDA=cuda>=12.0",
                "NVIDIA_REQUIRE_JETPACK=csi",
                "NVIDIA_REQUIRE_ARCH=arch>=7.0",
            ]),
            false,
        )
        .unwrap();
        assert_eq!(r.len(), 2);
        assert!(from_env(
            &env(&[
                "NVIDIA_REQUIRE_CUDA=cuda>=99",
                "NVIDIA_DISABLE_REQUIRE=true"
            ]),
            false
        )
        .unwrap()
        .is_empty());
        assert_eq!(
            from_env(
                &env(&["NVIDIA_REQUIRE_CUDA=cuda>=99", "NVIDIA_DISABLE_REQUIRE=no"]),
                false
            )
            .unwrap()
            .len(),
            1
        );
        let legacy = from_env(&env(&["CUDA_VERSION=9.0.176"]), true).unwrap();
        assert_eq!(legacy[0].any_of[0][0].to_string(), "cuda>=9.0");
        assert!(needs_nvml(&legacy));
        assert!(!needs_nvml(
            &from_env(&env(&["NVIDIA_REQUIRE_D=driver>=400"]), false).unwrap()
        ));
        assert!(from_env(&env(&["NVIDIA_REQUIRE_CUDA=cuda=>12"]), false).is_err());
    }
}
