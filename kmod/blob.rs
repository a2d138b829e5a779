// SPDX-License-Identifier: GPL-2.0

//! Checks shared by firmware and adapter blobs, which lay out their
//! sections alike (see uapi: tensor table, metadata, aligned data). Mirrors
//! userspace's `m4npu_format` so both refuse the same blobs.

use core::mem::size_of;

use kernel::{ffi::c_uint, prelude::*};

use crate::uapi;

extern "C" {
    // lib/crypto/sha256.c, built in through CONFIG_CRYPTO_SHA256.
    fn sha256(data: *const u8, len: c_uint, out: *mut u8);
}

/// UAPI blob structs: `repr(C)`, integers and byte arrays only.
///
/// # Safety
///
/// Every bit pattern must be a valid value.
pub(crate) unsafe trait BlobStruct: Copy {}
// SAFETY: integer and byte-array fields only.
unsafe impl BlobStruct for uapi::FwHeader {}
// SAFETY: as above.
unsafe impl BlobStruct for uapi::FwTensor {}
// SAFETY: as above.
unsafe impl BlobStruct for uapi::AdapterHeader {}

/// Reads a `T` at `off`, if it lies inside `blob`.
pub(crate) fn read<T: BlobStruct>(blob: &[u8], off: u64) -> Option<T> {
    let off = usize::try_from(off).ok()?;
    let bytes = blob.get(off..off.checked_add(size_of::<T>())?)?;
    // SAFETY: `bytes` holds `size_of::<T>()` bytes and any bytes are a valid `T`.
    Some(unsafe { bytes.as_ptr().cast::<T>().read_unaligned() })
}

fn within(off: u64, len: u64, limit: u64) -> bool {
    off.checked_add(len).is_some_and(|end| end <= limit)
}

/// A NUL-terminated, non-empty name field.
pub(crate) fn named(name: &[u8]) -> bool {
    name[0] != 0 && name.contains(&0)
}

/// Bounds of every section and tensor (the header's own fields and the
/// total size are the caller's to check).
pub(crate) fn check_sections(blob: &[u8], s: &uapi::BlobSections) -> core::result::Result<(), &'static str> {
    let total = blob.len() as u64;
    if s.tensor_entry_size as usize != size_of::<uapi::FwTensor>() {
        return Err("bad tensor entry size");
    }
    let table_len = u64::from(s.tensor_count) * u64::from(s.tensor_entry_size);
    if s.tensor_table_offset < s.header_size || !within(s.tensor_table_offset, table_len, total) {
        return Err("tensor table out of bounds");
    }
    if s.meta_offset < s.header_size || !within(s.meta_offset, s.meta_size, total) {
        return Err("metadata out of bounds");
    }
    if s.data_offset < s.header_size || s.data_offset % uapi::FW_ALIGN != 0 || !within(s.data_offset, s.data_size, total) {
        return Err("data section out of bounds or misaligned");
    }
    for i in 0..u64::from(s.tensor_count) {
        let e: uapi::FwTensor =
            read(blob, s.tensor_table_offset + i * u64::from(s.tensor_entry_size)).ok_or("tensor entry out of bounds")?;
        if !named(&e.name) || !(1..=4).contains(&e.ndim) || e.offset % uapi::FW_ALIGN != 0 || !within(e.offset, e.size, s.data_size)
        {
            return Err("bad tensor entry (name, dims, or data out of bounds)");
        }
    }
    Ok(())
}

/// SHA-256 of `data`.
pub(crate) fn sha256_of(data: &[u8]) -> Result<[u8; 32]> {
    let len = c_uint::try_from(data.len()).map_err(|_| EFBIG)?;
    let mut hash = [0u8; 32];
    // SAFETY: `data` is valid for `len` bytes, `hash` for 32.
    unsafe { sha256(data.as_ptr(), len, hash.as_mut_ptr()) };
    Ok(hash)
}
