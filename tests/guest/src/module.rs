//! Loading and unloading m4npu.ko with the raw syscalls, for exact errnos.

use std::ffi::CStr;
use std::io::Error;
use std::os::fd::AsRawFd;
use std::path::Path;

const KO: &str = "/lib/modules/m4npu.ko";
const NAME: &CStr = c"m4npu";

/// Parameters of the suite's default load: no firmware.
pub const NO_FIRMWARE: &str = "firmware=";

pub fn load() -> std::io::Result<()> {
    load_with(NO_FIRMWARE)
}

/// Loads the module with a parameter string such as `"firmware=m4npu/x pool_mb=16"`.
pub fn load_with(params: &str) -> std::io::Result<()> {
    load_file(KO, params)
}

/// Loads the module from the `.ko` at `path` (the suite's own build, or DKMS's).
pub fn load_file(path: &str, params: &str) -> std::io::Result<()> {
    let f = std::fs::File::open(path)?;
    let params = std::ffi::CString::new(params)?;
    // SAFETY: finit_module(fd, params, flags) with a valid fd and a valid,
    // NUL-terminated parameter string.
    let r = unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), params.as_ptr(), 0) };
    if r == 0 { Ok(()) } else { Err(Error::last_os_error()) }
}

/// Unloads (all files must be closed) and loads again with `params`.
pub fn reload(params: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    if is_loaded() {
        unload_when_free()?;
    }
    load_with(params).with_context(|| format!("insmod m4npu {params}"))
}

pub fn unload() -> std::io::Result<()> {
    // SAFETY: delete_module(name, flags) with a valid NUL-terminated name.
    let r = unsafe { libc::syscall(libc::SYS_delete_module, NAME.as_ptr(), libc::O_NONBLOCK) };
    if r == 0 { Ok(()) } else { Err(Error::last_os_error()) }
}

/// Unloads once no file is open. A finished process's io_uring holds its
/// files until the kernel's exit work tears the ring down, a moment after
/// the process is gone: the unload waits for that (`EAGAIN` meanwhile).
pub fn unload_when_free() -> anyhow::Result<()> {
    crate::children::eventually("rmmod m4npu once finished processes' rings are gone", || {
        Ok(match unload() {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Err(e.to_string()),
            Err(e) => return Err(anyhow::Error::from(e).context("rmmod m4npu")),
        })
    })
}

pub fn is_loaded() -> bool {
    Path::new("/sys/module/m4npu").exists()
}

/// The module as DKMS built it from m4npu-dkms's source (xtask's
/// package::dkms_build), against the same kernel.
pub const DKMS_KO: &str = "/lib/modules/m4npu-dkms.ko";

/// DKMS's build of the module loads, makes the device, pins the firmware
/// and runs a job on vnpud; the suite's own build is back afterwards.
pub fn dkms_module_loads() -> anyhow::Result<()> {
    use anyhow::{ensure, Context};
    use m4npu::model::TEXT_ENCODER;
    if is_loaded() {
        unload_when_free()?;
    }
    load_file(DKMS_KO, "firmware=m4npu/tiny.m4fw").with_context(|| format!("insmod {DKMS_KO}"))?;
    let checks = || -> anyhow::Result<()> {
        ensure!(Path::new("/dev/m4npu").exists() && Path::new("/dev/m4npu-hw").exists(), "no device nodes");
        let dev = m4npu::Device::open()?;
        let info = dev.info()?;
        ensure!(info.model.as_ref().is_some_and(|m| m.name == "tiny-synthetic"), "firmware not pinned: {info:?}");
        let vnpud = crate::vnpu::start_vnpud(2)?;
        let d_model = dev.model_meta()?.shape(TEXT_ENCODER)?.d_model;
        let v = dev.embed_tokens(&[1, 5, 9, 2], d_model)?;
        ensure!(v.len() == d_model && v.iter().all(|x| x.is_finite()), "EMBED gave {} values", v.len());
        drop(dev);
        crate::vnpu::stop(vnpud)
    };
    let r = checks();
    unload_when_free()?;
    load_with("firmware=m4npu/tiny.m4fw").context("insmod the suite's m4npu.ko again")?;
    r
}
