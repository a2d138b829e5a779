// SPDX-License-Identifier: GPL-2.0

//! `struct file`, after upstream `kernel::fs::File` (Linux 6.12+ in vfs, 6.13 in
//! `kernel`): only what this driver needs.

use core::ptr::NonNull;

use kernel::{
    bindings,
    ffi::{c_int, c_void},
    prelude::*,
    types::Opaque,
};

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

// kmod/helpers.c; `file` is a `struct file *`, typed void so that the lint
// for FFI-safe types does not wander into `struct file`'s members.
extern "C" {
    fn m4npu_helper_memfd_seals(file: *mut c_void) -> c_int;
    fn m4npu_helper_file_size(file: *mut c_void) -> bindings::loff_t;
}

/// A file of the calling task's file table, held by reference until drop:
/// after upstream `LocalFile::fget` (Linux 6.12+), with the few reads this
/// driver makes of it.
pub(crate) struct FileRef(NonNull<bindings::file>);

impl FileRef {
    /// The file open at `fd` in the calling task; `EBADF` if none is.
    pub(crate) fn fget(fd: u32) -> Result<Self> {
        // SAFETY: fget() takes any fd number and returns NULL if it is not
        // open.
        NonNull::new(unsafe { bindings::fget(fd) }).map(Self).ok_or(EBADF)
    }

    /// Its `F_SEAL_*` seals if it is a memfd (shmem) file, else `None`.
    /// Seals are only ever added, so a seal seen here stays set.
    pub(crate) fn memfd_seals(&self) -> Option<u32> {
        // SAFETY: `self` holds a reference to the file.
        let seals = unsafe { m4npu_helper_memfd_seals(self.0.as_ptr().cast()) };
        u32::try_from(seals).ok()
    }

    /// Its size in bytes.
    pub(crate) fn size(&self) -> u64 {
        // SAFETY: `self` holds a reference to the file.
        let size = unsafe { m4npu_helper_file_size(self.0.as_ptr().cast()) };
        u64::try_from(size).unwrap_or(0)
    }

    /// Fills `buf` from byte `pos` of the file; `EIO` if the file ends
    /// first.
    pub(crate) fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> Result {
        let mut pos = bindings::loff_t::try_from(pos).map_err(|_| EINVAL)?;
        let mut done = 0;
        while done < buf.len() {
            let rest = &mut buf[done..];
            // SAFETY: `rest` is valid for writes of its length; `pos` is ours.
            let n = unsafe { bindings::kernel_read(self.0.as_ptr(), rest.as_mut_ptr().cast(), rest.len(), &mut pos) };
            if n < 0 {
                return Err(Error::from_errno(n as i32));
            }
            if n == 0 {
                return Err(EIO);
            }
            done += n as usize;
        }
        Ok(())
    }
}

impl Drop for FileRef {
    fn drop(&mut self) {
        // SAFETY: the reference taken by fget(), put once.
        unsafe { bindings::fput(self.0.as_ptr()) };
    }
}
