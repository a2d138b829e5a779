//! Loading and unloading m4npu.ko with the raw syscalls, for exact errnos.

use std::ffi::CStr;
use std::io::Error;
use std::os::fd::AsRawFd;
use std::path::Path;

const KO: &str = "/lib/modules/m4npu.ko";
const NAME: &CStr = c"m4npu";

pub fn load() -> std::io::Result<()> {
    let f = std::fs::File::open(KO)?;
    // SAFETY: finit_module(fd, params, flags) with a valid fd and a valid,
    // NUL-terminated empty parameter string.
    let r = unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), c"".as_ptr(), 0) };
    if r == 0 { Ok(()) } else { Err(Error::last_os_error()) }
}

pub fn unload() -> std::io::Result<()> {
    // SAFETY: delete_module(name, flags) with a valid NUL-terminated name.
    let r = unsafe { libc::syscall(libc::SYS_delete_module, NAME.as_ptr(), libc::O_NONBLOCK) };
    if r == 0 { Ok(()) } else { Err(Error::last_os_error()) }
}

pub fn is_loaded() -> bool {
    Path::new("/sys/module/m4npu").exists()
}
