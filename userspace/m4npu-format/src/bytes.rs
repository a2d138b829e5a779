//! Plain-old-data views of the UAPI structs, without a dependency on a
//! byte-casting crate: the structs are `repr(C)`, padding-free integers and
//! byte arrays (checked by uapi's layout test), so any bytes are a valid value.

use m4npu_uapi::{AdapterHeader, FwHeader, FwTensor};

/// Types for which every byte pattern is a valid value and which have no padding.
///
/// # Safety
///
/// Implementors must be `repr(C)`, padding-free and made of integers and
/// byte arrays only.
pub(crate) unsafe trait Pod: Copy {}

// SAFETY: see the trait; both are integer-only `repr(C)` structs without padding.
unsafe impl Pod for FwHeader {}
// SAFETY: as above.
unsafe impl Pod for FwTensor {}
// SAFETY: as above.
unsafe impl Pod for AdapterHeader {}

pub(crate) fn as_bytes<T: Pod>(v: &T) -> &[u8] {
    // SAFETY: `T: Pod` has no padding, so all its bytes are initialised.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

/// Reads a `T` at `off`, if it fits.
pub(crate) fn read<T: Pod>(buf: &[u8], off: u64) -> Option<T> {
    let off = usize::try_from(off).ok()?;
    let end = off.checked_add(std::mem::size_of::<T>())?;
    let bytes = buf.get(off..end)?;
    // SAFETY: `bytes` has `size_of::<T>()` bytes and any bytes are a valid
    // `T: Pod`; `read_unaligned` copes with any alignment.
    Some(unsafe { bytes.as_ptr().cast::<T>().read_unaligned() })
}

/// A NUL-padded name field as a string.
pub(crate) fn name_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}
