//! The section checks of firmware and adapter blobs (tensor table,
//! metadata, aligned data), written once for both sides: the kernel module
//! compiles this file by `#[path]`, as it does `abi.rs`, and `m4npu-format`
//! calls it, so the library accepts exactly the blobs the kernel accepts.
//! No allocation and no `unsafe`: fields are read from their bytes.

// `%` where clippy would have `is_multiple_of`: the kernel's minimum Rust
// (1.78) lacks it.
#![allow(clippy::manual_is_multiple_of)]

use core::mem::{offset_of, size_of};

use super::abi::{BlobSections, FwTensor, FW_ALIGN, FW_MAX_TENSORS, FW_NAME_LEN};

/// Why a blob's sections were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SectionError {
    /// `tensor_entry_size` is not the size of [`FwTensor`].
    EntrySize,
    TableBounds,
    MetaBounds,
    /// The data section is out of bounds or not [`FW_ALIGN`]-aligned.
    DataBounds,
    /// More than [`FW_MAX_TENSORS`] tensors.
    TooManyTensors,
    /// Entry `.0`: an empty or unterminated name, `ndim` outside 1..=4, or
    /// data misaligned or outside the data section.
    BadTensor(u32),
    /// Entry `.0`'s name is not UTF-8 (names are looked up as strings).
    NameNotUtf8(u32),
    /// Entries `.0` and `.1` have the same name.
    Duplicate(u32, u32),
    /// The scratch space given is shorter than the tensor count.
    Scratch,
}

impl SectionError {
    /// What is wrong, for a log line.
    pub const fn reason(self) -> &'static str {
        match self {
            Self::EntrySize => "bad tensor entry size",
            Self::TableBounds => "tensor table out of bounds",
            Self::MetaBounds => "metadata out of bounds",
            Self::DataBounds => "data section out of bounds or misaligned",
            Self::TooManyTensors => "too many tensors",
            Self::BadTensor(_) => "bad tensor entry (name, dims, or data out of bounds)",
            Self::NameNotUtf8(_) => "tensor name not UTF-8",
            Self::Duplicate(..) => "two tensors share a name",
            Self::Scratch => "no room to sort the tensor names",
        }
    }
}

fn within(off: u64, len: u64, limit: u64) -> bool {
    off.checked_add(len).is_some_and(|end| end <= limit)
}

fn bytes_at(blob: &[u8], at: u64, len: usize) -> Option<&[u8]> {
    let at = usize::try_from(at).ok()?;
    blob.get(at..at.checked_add(len)?)
}

fn u32_at(blob: &[u8], at: u64) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes_at(blob, at, 4)?.try_into().ok()?))
}

fn u64_at(blob: &[u8], at: u64) -> Option<u64> {
    Some(u64::from_ne_bytes(bytes_at(blob, at, 8)?.try_into().ok()?))
}

/// A NUL-terminated, non-empty name field (of a tensor or a header).
pub fn named(field: &[u8]) -> bool {
    field.first().is_some_and(|&b| b != 0) && field.contains(&0)
}

/// Where field `field` of entry `i` of the tensor table starts, if that
/// is a number.
fn entry_field(s: &BlobSections, i: u32, field: usize) -> Option<u64> {
    u64::from(i).checked_mul(u64::from(s.tensor_entry_size))?.checked_add(s.tensor_table_offset)?.checked_add(field as u64)
}

/// The name field of tensor entry `i` up to its NUL, if the entry lies in
/// `blob`.
pub fn tensor_name<'b>(blob: &'b [u8], s: &BlobSections, i: u32) -> Option<&'b [u8]> {
    let field = bytes_at(blob, entry_field(s, i, offset_of!(FwTensor, name))?, FW_NAME_LEN)?;
    field.split(|&b| b == 0).next()
}

/// Bounds of every section and tensor, and unique UTF-8 tensor names (the
/// header's own fields and the total size are the caller's to check).
/// `order` is scratch space for sorting the names, `tensor_count` entries
/// at least.
pub fn check_sections(blob: &[u8], s: &BlobSections, order: &mut [u32]) -> Result<(), SectionError> {
    let total = blob.len() as u64;
    if s.tensor_entry_size as usize != size_of::<FwTensor>() {
        return Err(SectionError::EntrySize);
    }
    let table_len = u64::from(s.tensor_count) * u64::from(s.tensor_entry_size);
    if s.tensor_table_offset < s.header_size || !within(s.tensor_table_offset, table_len, total) {
        return Err(SectionError::TableBounds);
    }
    if s.meta_offset < s.header_size || !within(s.meta_offset, s.meta_size, total) {
        return Err(SectionError::MetaBounds);
    }
    if s.data_offset < s.header_size || s.data_offset % FW_ALIGN != 0 || !within(s.data_offset, s.data_size, total) {
        return Err(SectionError::DataBounds);
    }
    if s.tensor_count > FW_MAX_TENSORS {
        return Err(SectionError::TooManyTensors);
    }
    for i in 0..s.tensor_count {
        let name = entry_field(s, i, offset_of!(FwTensor, name)).and_then(|at| bytes_at(blob, at, FW_NAME_LEN));
        let named = name.is_some_and(named);
        let ndim = entry_field(s, i, offset_of!(FwTensor, ndim)).and_then(|at| u32_at(blob, at));
        let offset = entry_field(s, i, offset_of!(FwTensor, offset)).and_then(|at| u64_at(blob, at));
        let size = entry_field(s, i, offset_of!(FwTensor, size)).and_then(|at| u64_at(blob, at));
        let ok = match (ndim, offset, size) {
            (Some(ndim), Some(offset), Some(size)) => {
                named && (1..=4).contains(&ndim) && offset % FW_ALIGN == 0 && within(offset, size, s.data_size)
            }
            _ => false,
        };
        if !ok {
            return Err(SectionError::BadTensor(i));
        }
    }
    let name = |i: u32| tensor_name(blob, s, i).unwrap_or_default();
    if let Some(i) = (0..s.tensor_count).find(|&i| core::str::from_utf8(name(i)).is_err()) {
        return Err(SectionError::NameNotUtf8(i));
    }
    // Unique names: sorted, equal ones meet.
    let order = order.get_mut(..s.tensor_count as usize).ok_or(SectionError::Scratch)?;
    order.iter_mut().zip(0..).for_each(|(o, i)| *o = i);
    order.sort_unstable_by(|&a, &b| name(a).cmp(name(b)));
    match order.windows(2).find(|w| name(w[0]) == name(w[1])) {
        Some(w) => Err(SectionError::Duplicate(w[0].min(w[1]), w[0].max(w[1]))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    const ENTRY: usize = size_of::<FwTensor>();

    /// A blob of a 64-byte header, `names.len()` entries, and 4 KiB-aligned
    /// data of one page per tensor.
    fn blob(names: &[&[u8]]) -> ([u8; 32768], BlobSections) {
        let mut b = [0u8; 32768];
        let data_offset = 8192u64;
        for (i, n) in names.iter().enumerate() {
            let e = 64 + i * ENTRY;
            b[e..e + n.len()].copy_from_slice(n);
            b[e + offset_of!(FwTensor, ndim)..][..4].copy_from_slice(&1u32.to_ne_bytes());
            b[e + offset_of!(FwTensor, offset)..][..8].copy_from_slice(&(i as u64 * 4096).to_ne_bytes());
            b[e + offset_of!(FwTensor, size)..][..8].copy_from_slice(&16u64.to_ne_bytes());
        }
        let s = BlobSections {
            header_size: 64,
            total_size: b.len() as u64,
            tensor_table_offset: 64,
            tensor_count: names.len() as u32,
            tensor_entry_size: ENTRY as u32,
            meta_offset: 64 + (names.len() * ENTRY) as u64,
            meta_size: 2,
            data_offset,
            data_size: names.len() as u64 * 4096,
        };
        (b, s)
    }

    #[test]
    fn good_sections_pass_and_names_are_read() {
        let (b, s) = blob(&[b"a.weight", b"b"]);
        assert_eq!(check_sections(&b, &s, &mut [0; 2]), Ok(()));
        assert_eq!(tensor_name(&b, &s, 0), Some(&b"a.weight"[..]));
    }

    #[test]
    fn every_refusal_has_its_reason() {
        let (b, s) = blob(&[b"x", b"y", b"x"]);
        assert_eq!(check_sections(&b, &s, &mut [0; 3]), Err(SectionError::Duplicate(0, 2)));
        assert_eq!(check_sections(&b, &s, &mut [0; 2]), Err(SectionError::Scratch));
        let (mut b, s) = blob(&[b"x", b"y"]);
        b[64 + ENTRY] = 0xff;
        assert_eq!(check_sections(&b, &s, &mut [0; 2]), Err(SectionError::NameNotUtf8(1)));
        b[64 + ENTRY] = 0;
        assert_eq!(check_sections(&b, &s, &mut [0; 2]), Err(SectionError::BadTensor(1)));
        let (b, s) = blob(&[b"x"]);
        let cases = [
            (BlobSections { tensor_entry_size: 1, ..s }, SectionError::EntrySize),
            (BlobSections { tensor_table_offset: 32760, ..s }, SectionError::TableBounds),
            (BlobSections { meta_size: u64::MAX, ..s }, SectionError::MetaBounds),
            (BlobSections { data_offset: 8193, ..s }, SectionError::DataBounds),
        ];
        for (s, want) in cases {
            assert_eq!(check_sections(&b, &s, &mut [0; 1]), Err(want), "{s:?}");
            assert!(!want.reason().is_empty());
        }
        // A table that fits but is too long.
        let n = FW_MAX_TENSORS + 1;
        let big = std::vec![0u8; 64 + n as usize * ENTRY];
        let s = BlobSections { tensor_count: n, meta_offset: 64, meta_size: 0, data_offset: 4096, data_size: 0, ..s };
        assert_eq!(check_sections(&big, &s, &mut []), Err(SectionError::TooManyTensors));
    }
}
