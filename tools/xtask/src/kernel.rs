//! The Rust-enabled Linux 6.12 kernels, built from Debian's `linux-source-6.12`
//! outside the repo, for each architecture with clang (`LLVM=1`, which
//! cross-compiles by itself). A build directory is keyed by everything that
//! shapes the result, so a stale one is never reused and a second run is free.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::{arch::Arch, cmd, paths, setup};

/// Bump when the recipe below changes in a way the key would not see.
const RECIPE: u32 = 1;
const SOURCE_TARBALL: &str = "/usr/src/linux-source-6.12.tar.xz";
const SOURCE_PACKAGE: &str = "linux-source-6.12";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// KASAN, lockdep, kmemleak, Rust debug assertions: what the tests run on.
    Debug,
    /// No instrumentation: the demo and benchmarks.
    Release,
}

impl Flavour {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "debug" => Ok(Self::Debug),
            "release" => Ok(Self::Release),
            _ => bail!("unknown kernel flavour {s:?} (debug or release)"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Release => "release",
        }
    }

    fn fragments(self, arch: Arch) -> [PathBuf; 3] {
        let q = paths::repo().join("qemu");
        [q.join("base.config"), arch.fragment(), q.join(format!("{}.config", self.name()))]
    }
}

/// A built kernel.
pub struct Kernel {
    pub arch: Arch,
    pub flavour: Flavour,
    /// `O=` directory: what out-of-tree modules build against.
    pub build_dir: PathBuf,
    /// What QEMU boots (`bzImage`, arm64's `Image`).
    pub image: PathBuf,
    /// Cache key, also naming the module build.
    pub key: String,
}

fn first_line(c: &mut Command) -> Result<String> {
    Ok(cmd::output(c)?.lines().next().unwrap_or_default().to_string())
}

fn source_version() -> Result<String> {
    cmd::output(Command::new("dpkg-query").args(["-W", "-f=${Version}", SOURCE_PACKAGE]))
}

/// Unpacks the kernel source once per package version (atomically, via a
/// temporary directory and a rename).
fn source(version: &str) -> Result<PathBuf> {
    let base = paths::cache().join("linux-src").join(version);
    let tree = base.join("linux-source-6.12");
    if tree.join("Makefile").exists() {
        return Ok(tree);
    }
    cmd::step(&format!("unpacking {SOURCE_TARBALL} ({version})"));
    let tmp = paths::cache().join("linux-src").join(format!(".{version}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    cmd::run(Command::new("tar").arg("-xJf").arg(SOURCE_TARBALL).arg("-C").arg(&tmp))?;
    let _ = std::fs::remove_dir_all(&base);
    std::fs::rename(&tmp, &base)?;
    Ok(tree)
}

fn key(arch: Arch, flavour: Flavour, version: &str) -> Result<String> {
    let mut h = Sha256::new();
    h.update(format!("recipe {RECIPE}\nsource {version}\narch {}\n", arch.name()));
    for f in flavour.fragments(arch) {
        h.update(std::fs::read(&f).with_context(|| format!("read {}", f.display()))?);
    }
    h.update(first_line(Command::new("rustc").arg("--version"))?);
    h.update(first_line(Command::new("bindgen").arg("--version"))?);
    h.update(first_line(Command::new("clang").arg("--version"))?);
    Ok(h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect())
}

fn make(arch: Arch, src: &Path, out: &Path) -> Command {
    let mut c = Command::new("make");
    c.arg("-C").arg(src).arg(format!("O={}", out.display())).arg("LLVM=1").arg(format!("ARCH={}", arch.name()));
    c
}

impl Kernel {
    /// `make` in the build directory, for out-of-tree modules.
    pub fn make(&self) -> Command {
        let mut c = Command::new("make");
        c.arg("-C").arg(&self.build_dir).arg("LLVM=1").arg(format!("ARCH={}", self.arch.name()));
        c
    }

    /// Names the kernel in logs and module builds: `debug`, `arm64-debug`.
    pub fn label(&self) -> String {
        match self.arch {
            Arch::X86_64 => self.flavour.name().to_string(),
            a => format!("{}-{}", a.name(), self.flavour.name()),
        }
    }
}

/// Builds (or finds in the cache) the kernel of `flavour` for `arch`.
pub fn build(arch: Arch, flavour: Flavour) -> Result<Kernel> {
    let version = source_version().context("is linux-source-6.12 installed? run `cargo xtask setup`")?;
    let key = key(arch, flavour, &version)?;
    let root = paths::cache().join("kernel");
    let build_dir = root.join(format!("{}-{}-{key}", arch.name(), flavour.name()));
    let kernel = Kernel { arch, flavour, image: build_dir.join(arch.image()), build_dir: build_dir.clone(), key: key.clone() };
    let stamp = build_dir.join(".m4npu-built");
    if stamp.exists() && kernel.image.exists() {
        return Ok(kernel);
    }

    let src = source(&version)?;
    cmd::step(&format!(
        "building the {} {} kernel {version} (key {key}, bindgen {}) in {}",
        arch.name(),
        flavour.name(),
        setup::BINDGEN_VERSION,
        build_dir.display()
    ));
    std::fs::create_dir_all(&build_dir)?;
    let log = build_dir.join("m4npu-build.log");
    cmd::run_logged(make(arch, &src, &build_dir).arg("tinyconfig"), "tinyconfig", &log)?;
    cmd::run_logged(
        Command::new(src.join("scripts/kconfig/merge_config.sh"))
            .current_dir(&build_dir)
            .args(["-m", "-O"])
            .arg(&build_dir)
            .arg(build_dir.join(".config"))
            .env("ARCH", arch.name())
            .args(flavour.fragments(arch)),
        "merge_config",
        &log,
    )?;
    cmd::run_logged(make(arch, &src, &build_dir).arg("olddefconfig"), "olddefconfig", &log)?;
    check_config(&build_dir.join(".config"), &flavour.fragments(arch))?;
    let jobs = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let image = Path::new(arch.image()).file_name().and_then(|n| n.to_str()).unwrap_or("all");
    cmd::run_logged(
        make(arch, &src, &build_dir).arg(format!("-j{jobs}")).args([image, "modules"]),
        &format!("make {image} ({} {})", arch.name(), flavour.name()),
        &log,
    )?;
    std::fs::write(&stamp, "")?;
    prune(&root, &format!("{}-{}-", arch.name(), flavour.name()), &build_dir);
    if arch == Arch::X86_64 {
        // Builds from before the architecture was part of the name.
        prune(&root, &format!("{}-", flavour.name()), &build_dir);
    }
    Ok(kernel)
}

/// Every option a fragment sets must survive `olddefconfig`; a dependency
/// it lacks would silently drop it (and with it, say, KASAN).
fn check_config(config: &Path, fragments: &[PathBuf]) -> Result<()> {
    let have = std::fs::read_to_string(config)?;
    let mut lost = Vec::new();
    for f in fragments {
        for line in std::fs::read_to_string(f)?.lines() {
            let want = if let Some(opt) = line.strip_prefix("# ").and_then(|l| l.strip_suffix(" is not set")) {
                Some((opt, None))
            } else if line.starts_with("CONFIG_") {
                line.split_once('=').map(|(k, v)| (k, Some(v)))
            } else {
                None
            };
            let Some((opt, value)) = want else { continue };
            let got = have.lines().find_map(|l| l.strip_prefix(opt).and_then(|r| r.strip_prefix('=')));
            let ok = match value {
                Some(v) => got == Some(v),
                None => got.is_none() || got == Some("n"),
            };
            if !ok {
                lost.push(format!("{line} (got {})", got.unwrap_or("unset")));
            }
        }
    }
    if !lost.is_empty() {
        bail!("kernel config lost options from the fragments:\n  {}", lost.join("\n  "));
    }
    Ok(())
}

/// Drops builds named `prefix`* under other keys: they can never be used
/// again and each takes a few GiB.
fn prune(root: &Path, prefix: &str, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name();
        if p != keep && name.to_string_lossy().starts_with(prefix) {
            println!("    removing stale kernel build {}", p.display());
            let _ = std::fs::remove_dir_all(&p);
        }
    }
}
