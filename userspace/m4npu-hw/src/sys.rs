//! The device side at the system boundary: the ioctls of `/dev/m4npu-hw`
//! and the commands as the bytes the SQE's command area carries.

use std::os::fd::{AsRawFd, BorrowedFd};

use m4npu_uapi as uapi;

/// The raw ioctls, `unsafe` as nix makes them: each takes a pointer.
mod ioc {
    use super::uapi;

    nix::ioctl_read_bad!(hw_get_info, uapi::IOC_HW_GET_INFO, uapi::HwInfo);
    nix::ioctl_write_ptr_bad!(hw_set_flags, uapi::IOC_HW_SET_FLAGS, uapi::HwSetFlags);
}

/// `HW_GET_INFO`.
pub(crate) fn get_info(dev: BorrowedFd<'_>) -> nix::Result<uapi::HwInfo> {
    let mut info = uapi::HwInfo::default();
    // SAFETY: `info` is a valid, writable `struct m4npu_hw_info` for the call.
    unsafe { ioc::hw_get_info(dev.as_raw_fd(), &mut info) }?;
    Ok(info)
}

/// `HW_SET_FLAGS`.
pub(crate) fn set_flags(dev: BorrowedFd<'_>, flags: u64) -> nix::Result<()> {
    let req = uapi::HwSetFlags { flags };
    // SAFETY: `req` is a valid `struct m4npu_hw_set_flags` for the call.
    unsafe { ioc::hw_set_flags(dev.as_raw_fd(), &req) }.map(drop)
}

/// A slot's command as the SQE's 16-byte command area carries it.
pub(crate) fn cmd_bytes(cmd: &uapi::HwCmd) -> [u8; 16] {
    const _: () = assert!(size_of::<uapi::HwCmd>() == 16);
    // SAFETY: `HwCmd` is `repr(C)` integers without padding (16 bytes).
    unsafe { std::mem::transmute::<uapi::HwCmd, [u8; 16]>(*cmd) }
}

/// A batch command as the SQE's 16-byte command area carries it.
pub(crate) fn batch_cmd_bytes(cmd: &uapi::HwBatchCmd) -> [u8; 16] {
    const _: () = assert!(size_of::<uapi::HwBatchCmd>() == 16);
    // SAFETY: `HwBatchCmd` is `repr(C)` integers without padding (16 bytes).
    unsafe { std::mem::transmute::<uapi::HwBatchCmd, [u8; 16]>(*cmd) }
}
