// SPDX-License-Identifier: GPL-2.0

//! `request_firmware_into_buf()`: the firmware loader writing straight into
//! a caller's buffer. 6.12's `kernel::firmware` (like newer kernels') only
//! wraps the variants that allocate their own copy.

use kernel::{bindings, device::Device, ffi::c_void, prelude::*, str::CStr};

/// Reads firmware `name` (relative to the firmware search path) into the
/// front of `buf` on behalf of `dev`; returns its size. `EFBIG` when it does
/// not fit, and the loader's errno (`ENOENT`, ...) otherwise.
pub(crate) fn request_into_buf(name: &CStr, dev: &Device, buf: &mut [u8]) -> Result<usize> {
    let mut fw: *const bindings::firmware = core::ptr::null();
    // `Device` is a transparent wrapper of `struct device` (6.12 keeps its
    // `as_raw` private to the kernel crate).
    let dev = core::ptr::from_ref(dev).cast_mut().cast::<bindings::device>();
    // SAFETY: `dev` is a live device (borrowed); `buf` is valid for writes
    // of its length for the whole call, and the loader writes only there.
    let ret = unsafe {
        bindings::request_firmware_into_buf(&mut fw, name.as_char_ptr(), dev, buf.as_mut_ptr().cast::<c_void>(), buf.len())
    };
    kernel::error::to_result(ret)?;
    // SAFETY: the request succeeded, so `fw` is valid until released; the
    // data lives in `buf`, which release_firmware() leaves alone.
    let size = unsafe { (*fw).size };
    // SAFETY: as above; released once.
    unsafe { bindings::release_firmware(fw) };
    Ok(size)
}
