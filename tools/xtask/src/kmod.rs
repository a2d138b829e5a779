//! The out-of-tree module, built against a kernel from `kernel.rs`.
//!
//! The sources are copied into a build directory under target/, so that the
//! debug and release builds do not share objects and the work tree stays clean.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::{cmd, kernel::Kernel, paths};

/// What the module build reads: the top-level Kbuild and these directories.
const SOURCES: &[&str] = &["kmod", "uapi/src"];

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from).with_context(|| format!("read {}", from.display()))? {
        let e = e?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type()?.is_dir() {
            copy_tree(&src, &dst)?;
        } else if matches!(src.extension().and_then(|x| x.to_str()), Some("rs" | "c" | "h")) || e.file_name() == "Kbuild" {
            // Copy only when changed, so that make sees honest timestamps.
            if std::fs::read(&dst).ok() != Some(std::fs::read(&src)?) {
                std::fs::copy(&src, &dst)?;
            }
        }
    }
    Ok(())
}

/// Copies what the module build reads into `dir` (also the DKMS source
/// tree of `package.rs`).
pub fn copy_sources(dir: &Path) -> Result<()> {
    let repo = paths::repo();
    std::fs::create_dir_all(dir)?;
    std::fs::copy(repo.join("Kbuild"), dir.join("Kbuild"))?;
    for s in SOURCES {
        copy_tree(&repo.join(s), &dir.join(s))?;
    }
    Ok(())
}

/// Builds `m4npu.ko` for `kernel` and returns its path.
pub fn build(kernel: &Kernel) -> Result<PathBuf> {
    let dir = paths::target().join("kmod").join(format!("{}-{}", kernel.label(), kernel.key));
    copy_sources(&dir)?;
    cmd::step(&format!("building m4npu.ko against the {} kernel", kernel.label()));
    cmd::run(
        kernel
            .make()
            .arg(format!("M={}", dir.display()))
            // Through clippy-driver, and any rustc or clippy warning fails
            // the build: lints are part of every build, in every flavour.
            .args(["CLIPPY=1", "KRUSTFLAGS=-Dwarnings", "modules"]),
    )?;
    Ok(dir.join("kmod/m4npu.ko"))
}
