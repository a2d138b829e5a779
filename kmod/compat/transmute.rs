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

/// Declares `#[repr(C)]` structs of plain data and implements `FromBytes`
/// and `AsBytes` for them, as upstream's `#[derive(FromBytes, AsBytes)]`
/// (zerocopy's) would: the build fails if a field is not plain data itself
/// or if the layout has padding.
macro_rules! plain_data {
    ($(
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $($(#[$fmeta:meta])* $fvis:vis $field:ident: $ty:ty),* $(,)?
        }
    )*) => {$(
        $(#[$meta])*
        #[repr(C)]
        $vis struct $name {
            $($(#[$fmeta])* $fvis $field: $ty),*
        }

        const _: () = {
            #[allow(dead_code)]
            fn fields_are_plain_data()
            where
                $($ty: ::kernel::types::FromBytes + ::kernel::types::AsBytes),*
            {
            }
            assert!(::core::mem::size_of::<$name>() == 0 $(+ ::core::mem::size_of::<$ty>())*);
        };

        // SAFETY: `repr(C)` of fields that are all `FromBytes` and
        // `AsBytes`, with no padding (both checked above): every byte is a
        // field's, and any bytes are valid for each field.
        unsafe impl ::kernel::types::FromBytes for $name {}
        // SAFETY: as above.
        unsafe impl ::kernel::types::AsBytes for $name {}
    )*};
}
pub(crate) use plain_data;
