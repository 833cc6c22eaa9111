//! Parsers for the NVIDIA kernel module's `/proc` files, so discovery needs no NVML.

use serde::Serialize;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("no driver version in {0:?}")]
    Version(String),
    #[error("GPU information {path}: missing {field}")]
    Field { path: String, field: &'static str },
    #[error("GPU information {path}: bad {field} {value:?}")]
    Value {
        path: String,
        field: &'static str,
        value: String,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Reads the driver version from `driver/nvidia/version`
/// (`NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14  ...`).
pub fn parse_version(text: &str) -> Result<String> {
    let line = text
        .lines()
        .find(|l| l.starts_with("NVRM version:"))
        .ok_or_else(|| Error::Version(first_line(text)))?;
    line.split_whitespace()
        .find(|t| crate::container::require::is_version(t))
        .map(str::to_owned)
        .ok_or_else(|| Error::Version(line.to_string()))
}

fn first_line(t: &str) -> String {
    t.lines().next().unwrap_or("").chars().take(120).collect()
}

/// A PCI address, compared numerically so `0000:3b:00.0`, `00000000:3B:00.0` and
/// `3b:00.0` name the same device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BusId {
    pub domain: u32,
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

impl BusId {
    pub fn parse(s: &str) -> Option<BusId> {
        let s = s.trim();
        let (rest, func) = s.rsplit_once('.')?;
        let mut parts: Vec<&str> = rest.split(':').collect();
        if parts.len() == 2 {
            parts.insert(0, "0");
        }
        if parts.len() != 3 || parts.iter().any(|p| p.is_empty() || p.len() > 8) {
            return None;
        }
        let hex = |p: &str| u32::from_str_radix(p, 16).ok();
        Some(BusId {
            domain: hex(parts[0])?,
            bus: u8::try_from(hex(parts[1])?).ok()?,
            device: u8::try_from(hex(parts[2])?).ok().filter(|d| *d < 32)?,
            function: u8::try_from(hex(func)?).ok().filter(|f| *f < 8)?,
        })
    }
}

impl std::fmt::Display for BusId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

impl Serialize for BusId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One GPU's `driver/nvidia/gpus/<bus id>/information`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuInfo {
    pub model: String,
    pub uuid: String,
    pub bus_id: BusId,
    pub minor: u32,
    pub excluded: bool,
}

/// Parses an `information` file; `path` only labels errors.
pub fn parse_gpu_information(text: &str, path: &str) -> Result<GpuInfo> {
    let mut model = None;
    let mut uuid = None;
    let mut bus = None;
    let mut minor = None;
    let mut excluded = false;
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k.trim() {
            "Model" => model = Some(v.to_string()),
            "GPU UUID" => uuid = Some(v.to_string()),
            "Bus Location" => bus = Some(v.to_string()),
            "Device Minor" => minor = Some(v.to_string()),
            "GPU Excluded" => excluded = v.eq_ignore_ascii_case("yes"),
            _ => {}
        }
    }
    let field = |f: &'static str| Error::Field {
        path: path.into(),
        field: f,
    };
    let bad = |f: &'static str, v: &str| Error::Value {
        path: path.into(),
        field: f,
        value: v.chars().take(80).collect(),
    };
    let uuid = uuid.ok_or_else(|| field("GPU UUID"))?;
    if !uuid.starts_with("GPU-")
        || uuid.len() > 64
        || !uuid.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
    {
        return Err(bad("GPU UUID", &uuid));
    }
    let bus_s = bus.ok_or_else(|| field("Bus Location"))?;
    let bus_id = BusId::parse(&bus_s).ok_or_else(|| bad("Bus Location", &bus_s))?;
    let minor_s = minor.ok_or_else(|| field("Device Minor"))?;
    let minor: u32 = minor_s
        .parse()
        .ok()
        .filter(|m| *m < 254)
        .ok_or_else(|| bad("Device Minor", &minor_s))?;
    Ok(GpuInfo {
        model: model.unwrap_or_default(),
        uuid,
        bus_id,
        minor,
        excluded,
    })
}

/// Character device majors by driver name, from `/proc/devices`.
pub fn parse_char_majors(text: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("Block devices") {
            break;
        }
        let mut it = line.split_whitespace();
        if let (Some(n), Some(name), None) = (it.next(), it.next(), it.next()) {
            if let Ok(n) = n.parse() {
                out.push((n, name.to_string()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(
            parse_version("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14  Thu Feb 22 01:44:30 UTC 2024\nGCC version:  gcc 12\n").unwrap(),
            "550.54.14"
        );
        assert_eq!(
            parse_version("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build  (dvs-builder@U16)  Sun Jul 27 2025\n").unwrap(),
            "580.65.06"
        );
        // arm64 (sbsa) drivers: the architecture's name has digits too
        assert_eq!(
            parse_version("NVRM version: NVIDIA UNIX Open Kernel Module for aarch64  570.133.20  Release Build  (dvs-builder@U16-I3-B03-4-3)  Tue Mar 25 2025\n").unwrap(),
            "570.133.20"
        );
        assert_eq!(
            parse_version("NVRM version: NVIDIA UNIX aarch64 Kernel Module  550.54.14  Thu Feb 22 01:44:30 UTC 2024\n").unwrap(),
            "550.54.14"
        );
        assert!(parse_version("nothing here").is_err());
        assert!(parse_version("NVRM version: no numbers").is_err());
    }

    #[test]
    fn bus_ids() {
        let a = BusId::parse("0000:3b:00.0").unwrap();
        assert_eq!(BusId::parse("00000000:3B:00.0"), Some(a));
        assert_eq!(BusId::parse("3b:00.0"), Some(a));
        assert_eq!(a.to_string(), "0000:3b:00.0");
        for bad in [
            "",
            "3b",
            "0000:3b:00",
            "zz:00.0",
            "0000:3b:40.0",
            "0000:3b:00.9",
            "0000:100:00.0",
        ] {
            assert_eq!(BusId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn information() {
        let t = "Model: \t\t NVIDIA H200\nIRQ:   \t 123\nGPU UUID: \t GPU-4a1b2c3d-0000-1111-2222-333344445555\nVideo BIOS: \t 96.00.00.00.01\nBus Type: \t PCIe\nDMA Size: \t 52 bits\nDMA Mask: \t 0xfffffffffffff\nBus Location: \t 0000:3b:00.0\nDevice Minor: \t 2\nGPU Excluded:\t No\n";
        let g = parse_gpu_information(t, "x").unwrap();
        assert_eq!(g.model, "NVIDIA H200");
        assert_eq!(g.uuid, "GPU-4a1b2c3d-0000-1111-2222-333344445555");
        assert_eq!(g.minor, 2);
        assert_eq!(g.bus_id.to_string(), "0000:3b:00.0");
        assert!(!g.excluded);
        assert!(parse_gpu_information("Model: x\n", "x").is_err());
        let bad = t.replace("Device Minor: \t 2", "Device Minor: 255");
        assert!(parse_gpu_information(&bad, "x")
            .unwrap_err()
            .to_string()
            .contains("Device Minor"));
        let bad = t.replace("GPU-4a1b", "GPU-../../");
        assert!(parse_gpu_information(&bad, "x").is_err());
    }

    #[test]
    fn majors() {
        let m = parse_char_majors("Character devices:\n  1 mem\n195 nvidia-frontend\n508 nvidia-uvm\n\nBlock devices:\n195 bogus\n");
        assert_eq!(
            m,
            vec![
                (1, "mem".into()),
                (195, "nvidia-frontend".into()),
                (508, "nvidia-uvm".into())
            ]
        );
    }
}
