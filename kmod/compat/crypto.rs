// SPDX-License-Identifier: GPL-2.0

//! SHA-256 from lib/crypto, which 6.12's `kernel` crate does not wrap.

use kernel::ffi::c_uint;

extern "C" {
    // lib/crypto/sha256.c, built in through CONFIG_CRYPTO_SHA256.
    #[link_name = "sha256"]
    fn c_sha256(data: *const u8, len: c_uint, out: *mut u8);
}

/// SHA-256 of `data`; `None` past 4 GiB, more than the C function takes.
pub(crate) fn sha256(data: &[u8]) -> Option<[u8; 32]> {
    let len = c_uint::try_from(data.len()).ok()?;
    let mut hash = [0u8; 32];
    // SAFETY: `data` is valid for `len` bytes, `hash` for 32.
    unsafe { c_sha256(data.as_ptr(), len, hash.as_mut_ptr()) };
    Some(hash)
}
