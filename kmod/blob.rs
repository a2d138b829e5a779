// SPDX-License-Identifier: GPL-2.0

//! Checks shared by firmware and adapter blobs, which lay out their
//! sections alike (see uapi: tensor table, metadata, aligned data). Mirrors
//! userspace's `m4npu_format` so both refuse the same blobs.

use core::mem::{offset_of, size_of};

use kernel::{prelude::*, types::FromBytes};

use crate::compat::{crypto::sha256, transmute::from_bytes_copy};
use crate::uapi;

/// Reads a `T` at `off`, if it lies inside `blob`.
pub(crate) fn read<T: FromBytes>(blob: &[u8], off: u64) -> Option<T> {
    let off = usize::try_from(off).ok()?;
    from_bytes_copy(blob.get(off..off.checked_add(size_of::<T>())?)?)
}

fn within(off: u64, len: u64, limit: u64) -> bool {
    off.checked_add(len).is_some_and(|end| end <= limit)
}

/// A NUL-terminated, non-empty name field.
pub(crate) fn named(name: &[u8]) -> bool {
    name[0] != 0 && name.contains(&0)
}

/// Why a blob's sections were refused.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Refusal {
    /// The blob is malformed: what is wrong, for the log.
    Malformed(&'static str),
    /// Checking it needed memory there was none of.
    NoMemory,
}

impl From<&'static str> for Refusal {
    fn from(why: &'static str) -> Self {
        Self::Malformed(why)
    }
}

/// Bounds of every section and tensor, and unique UTF-8 tensor names (the
/// header's own fields and the total size are the caller's to check).
pub(crate) fn check_sections(blob: &[u8], s: &uapi::BlobSections) -> core::result::Result<(), Refusal> {
    let total = blob.len() as u64;
    if s.tensor_entry_size as usize != size_of::<uapi::FwTensor>() {
        return Err("bad tensor entry size".into());
    }
    let table_len = u64::from(s.tensor_count) * u64::from(s.tensor_entry_size);
    if s.tensor_table_offset < s.header_size || !within(s.tensor_table_offset, table_len, total) {
        return Err("tensor table out of bounds".into());
    }
    if s.meta_offset < s.header_size || !within(s.meta_offset, s.meta_size, total) {
        return Err("metadata out of bounds".into());
    }
    if s.data_offset < s.header_size || s.data_offset % uapi::FW_ALIGN != 0 || !within(s.data_offset, s.data_size, total) {
        return Err("data section out of bounds or misaligned".into());
    }
    if s.tensor_count > uapi::FW_MAX_TENSORS {
        return Err("too many tensors".into());
    }
    let entry = |i: u32| s.tensor_table_offset + u64::from(i) * u64::from(s.tensor_entry_size);
    for i in 0..s.tensor_count {
        let e: uapi::FwTensor = read(blob, entry(i)).ok_or("tensor entry out of bounds")?;
        if !named(&e.name) || !(1..=4).contains(&e.ndim) || e.offset % uapi::FW_ALIGN != 0 || !within(e.offset, e.size, s.data_size)
        {
            return Err("bad tensor entry (name, dims, or data out of bounds)".into());
        }
    }
    // Names are unique: sorted, equal ones meet. Each name is read in
    // place (the entries are in bounds, above), up to its NUL.
    let name = |i: u32| {
        let at = entry(i) as usize + offset_of!(uapi::FwTensor, name);
        let field = blob.get(at..at + uapi::FW_NAME_LEN).unwrap_or_default();
        field.split(|&b| b == 0).next().unwrap_or_default()
    };
    let mut order = KVec::with_capacity(s.tensor_count as usize, GFP_KERNEL).map_err(|_| Refusal::NoMemory)?;
    for i in 0..s.tensor_count {
        order.push(i, GFP_KERNEL).map_err(|_| Refusal::NoMemory)?;
    }
    // As UTF-8: what userspace looks names up by.
    if (0..s.tensor_count).any(|i| core::str::from_utf8(name(i)).is_err()) {
        return Err("tensor name not UTF-8".into());
    }
    order.sort_unstable_by(|&a, &b| name(a).cmp(name(b)));
    if order.windows(2).any(|w| name(w[0]) == name(w[1])) {
        return Err("two tensors share a name".into());
    }
    Ok(())
}

/// SHA-256 of `data`.
pub(crate) fn sha256_of(data: &[u8]) -> Result<[u8; 32]> {
    sha256(data).ok_or(EFBIG)
}
