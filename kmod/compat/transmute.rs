// SPDX-License-Identifier: GPL-2.0

//! Values from plain bytes, after upstream `kernel::transmute` (Linux 6.18:
//! `FromBytes::from_bytes_copy`).

use core::mem::size_of;

use kernel::types::FromBytes;

/// A `T` from exactly `size_of::<T>()` bytes, at any alignment.
pub(crate) fn from_bytes_copy<T: FromBytes>(bytes: &[u8]) -> Option<T> {
    if bytes.len() != size_of::<T>() {
        return None;
    }
    // SAFETY: `bytes` holds `size_of::<T>()` readable bytes, and every bit
    // pattern is a valid `T` (`FromBytes`); the read is unaligned.
    Some(unsafe { bytes.as_ptr().cast::<T>().read_unaligned() })
}
