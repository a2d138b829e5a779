// SPDX-License-Identifier: GPL-2.0

//! `struct file`, after upstream `kernel::fs::File` (Linux 6.12+ in vfs, 6.13 in
//! `kernel`): only what this driver needs.

use kernel::{bindings, types::Opaque};

/// A file the VFS hands to a file operation; borrowed for that call only.
#[repr(transparent)]
pub(crate) struct File(Opaque<bindings::file>);

// SAFETY: `struct file` is refcounted by the VFS and its fields that we read
// are stable or atomically updated, so it may be used from any thread.
unsafe impl Sync for File {}
// SAFETY: See `Sync`.
unsafe impl Send for File {}

impl File {
    /// Borrows the `struct file` a file operation was called with.
    ///
    /// # Safety
    ///
    /// `ptr` is a valid `struct file` for the whole lifetime `'a`.
    pub(crate) unsafe fn from_raw_file<'a>(ptr: *const bindings::file) -> &'a File {
        // SAFETY: `File` is `repr(transparent)` over `bindings::file`, and the
        // caller guarantees validity for `'a`.
        unsafe { &*ptr.cast() }
    }

    /// The raw `struct file`.
    pub(crate) fn as_ptr(&self) -> *mut bindings::file {
        self.0.get()
    }

    /// `f_flags` (`O_*`) of the open file.
    #[allow(dead_code)]
    pub(crate) fn flags(&self) -> u32 {
        // SAFETY: `self` is a valid file; `f_flags` is only changed by fcntl
        // under `f_lock` and a racy read of a `u32` is what C drivers do too.
        unsafe { core::ptr::addr_of!((*self.as_ptr()).f_flags).read_volatile() }
    }
}
