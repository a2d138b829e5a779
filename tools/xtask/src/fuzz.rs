//! The parser fuzz targets (`fuzz/`, cargo-fuzz on libFuzzer with
//! AddressSanitizer): every target for a while, from the committed seeds.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{cmd, paths};

/// The nightly that builds the targets (sanitizers need `-Z` flags),
/// pinned so a run is repeatable.
pub const TOOLCHAIN: &str = "nightly-2026-05-19";
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// cargo through rustup's proxy on `TOOLCHAIN`, without what the outer
/// (stable) cargo put in the environment for its own children.
fn nightly_cargo(dir: &Path) -> Command {
    let mut c = Command::new("cargo");
    c.arg(format!("+{TOOLCHAIN}")).current_dir(dir);
    for var in ["CARGO", "RUSTC", "RUSTDOC", "RUSTUP_TOOLCHAIN", "CARGO_TARGET_DIR", "RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS"] {
        c.env_remove(var);
    }
    c
}

/// The pinned nightly and cargo-fuzz, installed once.
pub fn setup() -> Result<()> {
    let toolchains = cmd::output(Command::new("rustup").args(["toolchain", "list"]))?;
    if !toolchains.lines().any(|l| l.starts_with(TOOLCHAIN)) {
        cmd::step(&format!("rustup toolchain install {TOOLCHAIN} (for the fuzz targets)"));
        cmd::run(Command::new("rustup").args(["toolchain", "install", TOOLCHAIN, "--profile", "minimal"]))?;
    }
    let want = format!("cargo-fuzz {CARGO_FUZZ_VERSION}");
    let have = Command::new("cargo").args(["fuzz", "--version"]).output().ok();
    if have.is_none_or(|o| String::from_utf8_lossy(&o.stdout).trim() != want) {
        cmd::step(&format!("cargo install cargo-fuzz {CARGO_FUZZ_VERSION}"));
        cmd::run(cmd::cargo().args(["install", "cargo-fuzz", "--locked", "--version", CARGO_FUZZ_VERSION]))?;
    }
    Ok(())
}

/// Builds the targets and runs each for `seconds` from its seed corpus;
/// a crash, a leak or a failed assertion fails the run (the input is left
/// in `fuzz/artifacts/<target>/`).
pub fn parsers(seconds: u32) -> Result<()> {
    setup()?;
    let dir = paths::repo().join("fuzz");
    cmd::step(&format!("building the fuzz targets ({TOOLCHAIN}, AddressSanitizer)"));
    cmd::run(nightly_cargo(&dir).args(["fuzz", "build"]))?;
    let targets = cmd::output(nightly_cargo(&dir).args(["fuzz", "list"]))?;
    let mut lines = Vec::new();
    for target in targets.lines().map(str::trim).filter(|t| !t.is_empty()) {
        // New inputs go to a scratch corpus; the committed seeds are read only.
        let scratch = paths::target().join("fuzz-corpus").join(target);
        std::fs::create_dir_all(&scratch)?;
        cmd::step(&format!("fuzzing {target} for {seconds} s"));
        let out = nightly_cargo(&dir)
            .args(["fuzz", "run", target])
            .arg(&scratch)
            .arg(dir.join("corpus").join(target))
            .args(["--", &format!("-max_total_time={seconds}"), "-print_final_stats=1"])
            .output()
            .with_context(|| format!("running the {target} fuzz target"))?;
        let log = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            eprintln!("{log}");
            bail!("fuzz target {target} failed (input under fuzz/artifacts/{target}/)");
        }
        let runs: u64 = log
            .lines()
            .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        lines.push(format!("{target}: {runs} inputs in {seconds} s ({:.0}/s), no crash", runs as f64 / f64::from(seconds)));
    }
    for l in lines {
        println!("xtask: fuzz {l}");
    }
    Ok(())
}
