// SPDX-License-Identifier: GPL-2.0

//! Checks shared by firmware and adapter blobs, which lay out their
//! sections alike (see uapi: tensor table, metadata, aligned data); the
//! section checks are the UAPI's own (`uapi/src/sections.rs`), which
//! userspace's `m4npu_format` runs too.

use core::mem::size_of;

use kernel::{prelude::*, types::FromBytes};

use crate::compat::{crypto::sha256, transmute::from_bytes_copy};
use crate::uapi;

/// Reads a `T` at `off`, if it lies inside `blob`.
pub(crate) fn read<T: FromBytes>(blob: &[u8], off: u64) -> Option<T> {
    let off = usize::try_from(off).ok()?;
    from_bytes_copy(blob.get(off..off.checked_add(size_of::<T>())?)?)
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
/// header's own fields and the total size are the caller's to check): the
/// UAPI's one validator, which userspace runs too.
pub(crate) fn check_sections(blob: &[u8], s: &uapi::BlobSections) -> core::result::Result<(), Refusal> {
    // A count past the limit is refused before any memory is asked for.
    let n = if s.tensor_count <= uapi::FW_MAX_TENSORS { s.tensor_count as usize } else { 0 };
    let mut order = KVec::from_elem(0u32, n, GFP_KERNEL).map_err(|_| Refusal::NoMemory)?;
    uapi::check_sections(blob, s, &mut order).map_err(|e| Refusal::Malformed(e.reason()))
}

/// SHA-256 of `data`.
pub(crate) fn sha256_of(data: &[u8]) -> Result<[u8; 32]> {
    sha256(data).ok_or(EFBIG)
}
