//! The architectures m4npu is built, booted and tested on: x86-64 (the
//! default, native here) and arm64 (phones; cross-built with clang and
//! Debian's cross toolchain, booted on `qemu-system-aarch64 -M virt`).

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::paths;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Arm64,
}

impl Arch {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "x86_64" | "x86-64" | "amd64" => Ok(Self::X86_64),
            "arm64" | "aarch64" => Ok(Self::Arm64),
            _ => bail!("unknown architecture {s:?} (x86_64 or arm64)"),
        }
    }

    /// The kernel's name for it (`ARCH=`), also naming caches and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64",
            Self::Arm64 => "arm64",
        }
    }

    /// Its config fragment, applied after `base.config`.
    pub fn fragment(self) -> PathBuf {
        paths::repo().join("qemu").join(format!("{}.config", self.name()))
    }

    /// The kernel image QEMU boots, relative to the build directory.
    pub fn image(self) -> &'static str {
        match self {
            Self::X86_64 => "arch/x86/boot/bzImage",
            Self::Arm64 => "arch/arm64/boot/Image",
        }
    }

    /// Rust's target for the guest's userspace; `None` is the host's.
    pub fn rust_target(self) -> Option<&'static str> {
        match self {
            Self::X86_64 => None,
            Self::Arm64 => Some("aarch64-unknown-linux-gnu"),
        }
    }

    /// The C compiler for the guest's C programs.
    pub fn cc(self) -> &'static str {
        match self {
            Self::X86_64 => "cc",
            Self::Arm64 => "aarch64-linux-gnu-gcc",
        }
    }

    pub fn qemu(self) -> &'static str {
        match self {
            Self::X86_64 => "qemu-system-x86_64",
            Self::Arm64 => "qemu-system-aarch64",
        }
    }

    /// Whether this is the machine we run on (KVM is only worth a probe then).
    pub fn is_host(self) -> bool {
        match self {
            Self::X86_64 => cfg!(target_arch = "x86_64"),
            Self::Arm64 => cfg!(target_arch = "aarch64"),
        }
    }
}
