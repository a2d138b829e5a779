//! Raw ioctls for tests that must send what the library never would.

use std::io::Error;
use std::os::fd::{AsFd, AsRawFd};

/// `ioctl(fd, cmd, arg)`, returning the errno on failure.
pub fn ioctl(fd: &impl AsFd, cmd: u32, arg: usize) -> Result<i32, i32> {
    // SAFETY: the kernel validates `arg`; passing bad pointers is the point of
    // some tests, and the driver must answer them with an errno.
    let r = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), cmd as _, arg) };
    if r >= 0 { Ok(r) } else { Err(Error::last_os_error().raw_os_error().unwrap_or(0)) }
}

/// Name of an errno, for messages.
pub fn errno_name(e: i32) -> String {
    format!("{} ({e})", Error::from_raw_os_error(e))
}
