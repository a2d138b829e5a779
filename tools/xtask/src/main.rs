//! `cargo xtask <command>`: everything from a fresh machine to a booted,
//! tested m4npu.
//!
//! - `setup`   install toolchains and packages (idempotent)
//! - `kernel`  build the debug and release kernels (cached outside the repo)
//! - `test`    host tests, then the guest suite on the debug kernel
//! - `demo`    boot the release kernel, load the module, run `m4 info`
//! - `vm`      boot a kernel and run a guest job by hand

mod cmd;
mod guest;
mod kernel;
mod kmod;
mod paths;
mod setup;

use anyhow::{bail, Result};

use kernel::Flavour;

const USAGE: &str = "usage: cargo xtask <setup|kernel|test|demo|vm [debug|release] JOB>";

fn main() {
    if let Err(e) = run(std::env::args().skip(1).collect()) {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Vec<String>) -> Result<()> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["setup"] => setup::run(),
        ["kernel"] => {
            setup::run()?;
            kernel::build(Flavour::Debug)?;
            kernel::build(Flavour::Release)?;
            Ok(())
        }
        ["test"] => test(),
        ["demo"] => demo(),
        ["vm", flavour, job] => {
            setup::run()?;
            let flavour = Flavour::parse(flavour)?;
            guest::run(&guest::Boot::prepare(flavour)?, job).map(drop)
        }
        _ => bail!("{USAGE}"),
    }
}

/// Host tests first (fast, no VM), then the guest suite on the debug kernel.
fn test() -> Result<()> {
    setup::run()?;
    cmd::step("host tests: cargo test --workspace");
    cmd::run(cmd::cargo().args(["test", "--workspace", "--release"]))?;
    let boot = guest::Boot::prepare(Flavour::Debug)?;
    let outcome = guest::run(&boot, "test")?;
    // The suite's own `N passed, N failed` line closes the run, alone.
    println!("xtask: guest suite passed on the debug kernel, no kernel splats, no leaks");
    println!("{}", outcome.summary.trim());
    Ok(())
}

/// The main job: the release kernel boots, loads the module and reports.
fn demo() -> Result<()> {
    setup::run()?;
    let boot = guest::Boot::prepare(Flavour::Release)?;
    guest::run(&boot, "demo")?;
    Ok(())
}
