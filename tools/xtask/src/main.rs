//! `cargo xtask <command>`: everything from a fresh machine to a booted,
//! tested m4npu.
//!
//! - `setup`   install toolchains and packages (idempotent)
//! - `kernel`  build the debug and release kernels (cached outside the repo)
//! - `test`    host tests, a short fuzz of every parser, then the guest
//!   suite on the debug kernel
//! - `fuzz --calls N`  the UAPI fuzzer in the guest (debug kernel), N calls
//! - `fuzz-parsers [--seconds N]`  each parser fuzz target N s (default 60)
//! - `demo`    boot the release kernel, load the module, run `m4 info`
//! - `package` the Debian packages (DKMS module, firmware, vnpud, m4npu
//!   tools, libm4npu) in target/debian/, lintian, an install test
//! - `bench handoff`  the driver's cost per job against an io_uring NOP
//! - `bench apps`     many apps on the real model through the driver and vnpud
//! - `bench engine`   the engine against llama.cpp and ONNX Runtime (host, no VM)
//! - `eaibench [--train]`  the benchmark report (tools/eaibench/REPORT.md)
//!   from the committed adapters; `--train` retrains them all first
//! - `eaibench --guest [a,b,..]`  tasks' full test splits through the
//!   module and vnpud on the release kernel, against the host path
//!   (tools/eaibench/GUEST.md)
//! - `vm`      boot a kernel and run a guest job by hand: `test`,
//!   `test:<names>`, `kills:N` (vnpud killed N times under load), ...
//!
//! `--arch arm64` (anywhere on the line) builds, boots and tests arm64
//! instead of x86-64 (`kernel`, `test`, `demo`, `bench`, `fuzz`, `vm`).

mod arch;
mod cmd;
mod eaibench;
mod fuzz;
mod guest;
mod kernel;
mod kmod;
mod package;
mod paths;
mod setup;

use anyhow::{bail, Context, Result};

use arch::Arch;
use kernel::Flavour;

const USAGE: &str = "usage: cargo xtask [--arch x86_64|arm64] <setup|kernel|test|demo|package|bench <handoff [--debug]|apps|engine [--rounds N]>|fuzz --calls N|fuzz-parsers [--seconds N]|eaibench [--train | --guest [TASKS]]|vm [debug|release] JOB>";

fn main() {
    if let Err(e) = run(std::env::args().skip(1).collect()) {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(mut args: Vec<String>) -> Result<()> {
    let mut arch = Arch::X86_64;
    if let Some(i) = args.iter().position(|a| a == "--arch") {
        let name = args.get(i + 1).context("--arch takes x86_64 or arm64")?;
        arch = Arch::parse(name)?;
        args.drain(i..i + 2);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["setup"] => setup::run(arch),
        ["kernel"] => {
            setup::run(arch)?;
            kernel::build(arch, Flavour::Debug)?;
            kernel::build(arch, Flavour::Release)?;
            Ok(())
        }
        ["test"] => test(arch),
        ["demo"] => demo(arch),
        ["package"] => package::package(),
        ["bench", "handoff"] => bench(arch, Flavour::Release, "bench-handoff"),
        ["bench", "handoff", "--debug"] => bench(arch, Flavour::Debug, "bench-handoff"),
        ["bench", "apps"] => bench(arch, Flavour::Release, "bench-apps"),
        ["bench", "engine"] => bench_engine(7),
        ["bench", "engine", "--rounds", n] => bench_engine(n.parse().context("--rounds takes a whole number")?),
        ["fuzz", "--calls", n] => {
            let calls: u64 = n.parse().context("--calls takes a whole number")?;
            setup::run(arch)?;
            let boot = guest::Boot::prepare(arch, Flavour::Debug)?;
            guest::run(&boot, &format!("fuzz:{calls}")).map(drop)
        }
        ["fuzz-parsers"] => fuzz::parsers(60),
        ["fuzz-parsers", "--seconds", s] => fuzz::parsers(s.parse().context("--seconds takes a whole number")?),
        ["eaibench"] => eaibench::report(false),
        ["eaibench", "--train"] => eaibench::report(true),
        ["eaibench", "--guest"] => eaibench::guest(arch, eaibench::GUEST_TASKS),
        ["eaibench", "--guest", tasks] => eaibench::guest(arch, &tasks.split(',').collect::<Vec<_>>()),
        ["vm", flavour, job] => {
            setup::run(arch)?;
            let flavour = Flavour::parse(flavour)?;
            guest::run(&guest::Boot::prepare(arch, flavour)?, job).map(drop)
        }
        _ => bail!("{USAGE}"),
    }
}

/// The app library without its default features, as a minimal client
/// links it: it builds, and without `tokenizers`.
fn minimal_client() -> Result<()> {
    cmd::step("the app library without default features (no tokenizers, no tokio)");
    let minimal = ["-p", "m4npu", "--no-default-features"];
    cmd::run(cmd::cargo().args(["check", "--release"]).args(minimal))?;
    let tree = cmd::output(cmd::cargo().args(["tree", "-e", "normal", "--prefix", "none"]).args(minimal))?;
    if let Some(dep) = tree.lines().find(|l| l.starts_with("tokenizers ") || l.starts_with("tokio ")) {
        bail!("the minimal app library still depends on {dep}");
    }
    Ok(())
}

/// Host tests first (fast, no VM), then the guest suite on the debug kernel.
fn test(arch: Arch) -> Result<()> {
    setup::run(arch)?;
    cmd::step("host tests: cargo test --workspace");
    cmd::run(cmd::cargo().args(["test", "--workspace", "--release"]))?;
    if let Some(target) = arch.rust_target() {
        // The engine's kernels and fixtures as the target runs them (under
        // qemu-user), and the UAPI's layout as the target's C compiler sees it.
        cmd::step(&format!("engine and UAPI tests for {target} (qemu-user)"));
        cmd::run(cmd::cargo().args(["test", "--release", "--target", target, "-p", "vnpu-engine", "-p", "m4npu-uapi"]))?;
    }
    minimal_client()?;
    // Every parser of untrusted bytes, fuzzed briefly from its seeds.
    fuzz::parsers(5)?;
    let boot = guest::Boot::prepare(arch, Flavour::Debug)?;
    // The training path on real data and the real firmware, a few steps:
    // that it runs end to end and packs an adapter the device accepts.
    // captionmatch: its captions through the text encoder's EMBED job.
    for (task, steps, eval) in [("digits", "5", "40"), ("captionmatch", "2", "8")] {
        cmd::step(&format!("training a {task} adapter for {steps} steps (m4-train)"));
        let out = paths::target().join("guest").join(format!("ci-{task}.m4a"));
        cmd::run(
            cmd::cargo()
                .args(["run", "--release", "--quiet", "-p", "m4-train", "--", "train", task, "--max-steps", steps, "--eval", eval, "--firmware"])
                .arg(paths::target().join("guest").join("foundation.m4fw"))
                .arg("--data")
                .arg(paths::cache().join("eaibench"))
                .arg("--out")
                .arg(&out),
        )?;
    }
    let outcome = guest::run(&boot, "test")?;
    // The suite's own `N passed, N failed` line closes the run, alone.
    println!("xtask: guest suite passed on the {} debug kernel, no kernel splats, no leaks", arch.name());
    println!("{}", outcome.summary.trim());
    Ok(())
}

/// A benchmark in the guest: `bench-handoff` (the driver's cost per job
/// against a NOP) or `bench-apps` (many apps on the real model through
/// vnpud). The release kernel; `--debug` for the instrumented one, whose
/// ratios are not those of a product.
fn bench(arch: Arch, flavour: Flavour, job: &str) -> Result<()> {
    setup::run(arch)?;
    let boot = guest::Boot::prepare(arch, flavour)?;
    guest::run(&boot, job)?;
    Ok(())
}

/// The engine against llama.cpp and ONNX Runtime on this machine (no VM):
/// installs the peers once, then runs the engine's bench example with
/// `--compare` on 2 threads (the phone-class budget the targets are set for).
fn bench_engine(rounds: usize) -> Result<()> {
    setup::weights()?;
    setup::bench_peers()?;
    cmd::step("cargo run -p vnpu-engine --release --example bench -- 2 --compare");
    cmd::run(cmd::cargo().args(["run", "--release", "-p", "vnpu-engine", "--example", "bench", "--", "2", "--compare", "--rounds"]).arg(rounds.to_string()))
}

/// The main job: the release kernel boots, loads the module and reports.
fn demo(arch: Arch) -> Result<()> {
    setup::run(arch)?;
    setup::eaibench_baselines()?;
    let boot = guest::Boot::prepare(arch, Flavour::Release)?;
    guest::run(&boot, "demo")?;
    Ok(())
}
