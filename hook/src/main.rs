//! `nvhook`: the OCI hook (prestart / createRuntime) and its tools (plan, info).

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use nvhook::config::{Config, Level};
use nvhook::driver::Driver;
use nvhook::pipeline;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "nvhook",
    version,
    about = "Gives OCI containers their NVIDIA GPUs"
)]
struct Cli {
    /// Configuration file (default: $NVHOOK_CONFIG, else /etc/nvhook/config.toml).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// OCI prestart hook: container state JSON on stdin.
    Prestart {
        /// Read the state from FILE instead of stdin.
        #[arg(long, value_name = "FILE")]
        state: Option<PathBuf>,
        /// Tests only: fail on purpose at a step (source:N, mount:N, cgroup, ldconfig).
        #[arg(long, hide = true, value_parser = nvhook::apply::Faults::parse)]
        fail_at: Option<nvhook::apply::Faults>,
    },
    /// OCI createRuntime hook: container state JSON on stdin.
    #[command(alias = "createRuntime")]
    CreateRuntime {
        #[arg(long, value_name = "FILE")]
        state: Option<PathBuf>,
        #[arg(long, hide = true, value_parser = nvhook::apply::Faults::parse)]
        fail_at: Option<nvhook::apply::Faults>,
    },
    /// Print what the hook would do for a container, as JSON; changes nothing.
    Plan {
        #[arg(long, value_name = "FILE")]
        state: Option<PathBuf>,
    },
    /// Print what was discovered about the host driver.
    Info {
        #[arg(long)]
        json: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        let msg = one_line(&e);
        nvhook::log::error(&msg);
        // One line: runtimes show a failed hook's stderr to the user.
        eprintln!("nvhook: {msg}");
        std::process::exit(1);
    }
}

/// The error and its causes on one line, skipping causes whose text an outer message
/// already includes (module errors embed their source in their own message).
fn one_line(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    msg.replace('\n', " ")
}

fn run(cli: Cli) -> Result<()> {
    let loaded = Config::load(cli.config.as_deref())?;
    let cfg = loaded.config;
    nvhook::log::init(&cfg.log, "nvhook");
    match cli.command {
        Command::Prestart { state, fail_at } | Command::CreateRuntime { state, fail_at } => {
            hook(&cfg, state, fail_at.unwrap_or_default())
        }
        Command::Plan { state } => {
            let state = pipeline::read_state(state.as_deref())?;
            let d = pipeline::decide(&cfg, &state, &mut Default::default())
                .with_context(|| format!("container {}", state.id))?;
            println!("{}", serde_json::to_string_pretty(&d)?);
            Ok(())
        }
        Command::Info { json } => info(&cfg, json),
    }
}

fn hook(cfg: &Config, state: Option<PathBuf>, faults: nvhook::apply::Faults) -> Result<()> {
    let clock = Instant::now();
    // Least privilege: keep only what the phases below need (see caps::HOOK).
    nvhook::caps::limit_to(nvhook::caps::HOOK).context("cannot drop capabilities")?;
    let state = pipeline::read_state(state.as_deref())?;
    let (d, t) = pipeline::run_hook(cfg, &state, faults)
        .with_context(|| format!("container {}", state.id))?;
    match &d.plan {
        None => nvhook::log::debug(&format!(
            "container {}: no GPU request, nothing to do",
            state.id
        )),
        Some(p) => {
            let gpus: Vec<String> = p.gpus.iter().map(|g| g.uuid.clone()).collect();
            nvhook::log::info(&format!(
                "container {}: gpus [{}], {} devices, {} mounts",
                state.id,
                gpus.join(","),
                p.devices.len(),
                p.mounts.len()
            ));
        }
    }
    if nvhook::log::enabled(Level::Debug) {
        let us = |d: std::time::Duration| d.as_micros();
        nvhook::log::debug(&format!(
            "timings_us parse={} discover={} plan={} prepare={} cgroup={} mount={} ldconfig={} total={}",
            us(t.parse),
            us(t.discover),
            us(t.plan),
            us(t.apply.prepare),
            us(t.apply.cgroup),
            us(t.apply.mount),
            us(t.apply.ldconfig),
            us(clock.elapsed())
        ));
    }
    Ok(())
}

fn info(cfg: &Config, json: bool) -> Result<()> {
    let d = Driver::discover(&pipeline::roots(cfg))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&d)?);
        return Ok(());
    }
    println!("driver version: {}", d.version);
    println!("GPUs:");
    for g in &d.gpus {
        let node = g
            .node
            .as_ref()
            .map_or("missing".to_string(), |n| n.host_path.display().to_string());
        println!(
            "  {} minor {} {} {} {} (node {})",
            g.index, g.minor, g.uuid, g.bus_id, g.model, node
        );
    }
    println!("device nodes:");
    for n in [&d.nvidiactl, &d.uvm, &d.uvm_tools, &d.modeset]
        .into_iter()
        .flatten()
    {
        println!(
            "  {} {}:{} ({})",
            n.path,
            n.major,
            n.minor,
            n.host_path.display()
        );
    }
    println!("libraries:");
    for l in &d.libraries {
        println!(
            "  {:<9} {:?} {}",
            l.capability.name(),
            l.arch,
            l.host_path.display()
        );
    }
    println!("binaries:");
    for b in &d.binaries {
        println!("  {:<9} {}", b.capability.name(), b.host_path.display());
    }
    println!("firmware:");
    for f in &d.firmware {
        println!("  {}", f.host_path.display());
    }
    println!("sockets:");
    for s in &d.sockets {
        println!("  {:<9} {}", s.capability.name(), s.host_path.display());
    }
    for w in &d.warnings {
        println!("warning: {w}");
    }
    Ok(())
}
