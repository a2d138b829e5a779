// SPDX-License-Identifier: GPL-2.0

//! debugfs, in the spirit of upstream `kernel::debugfs` (Linux 6.17): a
//! directory with one read-only file rendered by a seq_file show callback.
//! 6.12's bindings lack debugfs.h, so its exported functions are declared here.

use core::{ffi::c_void, marker::PhantomData, mem::MaybeUninit};

use kernel::{bindings, ffi::c_int, prelude::*, str::CStr, sync::Arc, types::Opaque};

use super::seq_file::SeqFile;

// `fops` is a `const struct file_operations *`, typed void so that the lint
// for FFI-safe types does not wander into `struct module` through `owner`.
extern "C" {
    fn debugfs_create_dir(name: *const u8, parent: *mut c_void) -> *mut c_void;
    fn debugfs_create_file(
        name: *const u8,
        mode: u16,
        parent: *mut c_void,
        data: *mut c_void,
        fops: *const c_void,
    ) -> *mut c_void;
    fn debugfs_remove(dentry: *mut c_void);
}

/// Something a debugfs file shows.
pub(crate) trait Show: Send + Sync + 'static {
    fn show(&self, m: &SeqFile);
}

/// `<debugfs>/<dir>/<file>`, showing `data`; removed (recursively) on drop.
///
/// debugfs is best effort: creation failures leave an error pointer, which
/// debugfs_remove() ignores, as C drivers do.
pub(crate) struct ShowDir<T: Show> {
    dir: *mut c_void,
    /// Heap-allocated so its address stays put; `owner` pins the module
    /// while the file is open.
    _fops: KBox<Opaque<bindings::file_operations>>,
    _data: Arc<T>,
    _t: PhantomData<T>,
}

// SAFETY: the dentry pointer is only passed to debugfs_remove(), which may
// run on any thread; `T: Send + Sync`.
unsafe impl<T: Show> Send for ShowDir<T> {}
// SAFETY: `&ShowDir` gives access to nothing.
unsafe impl<T: Show> Sync for ShowDir<T> {}

impl<T: Show> ShowDir<T> {
    pub(crate) fn new(dir: &CStr, file: &CStr, module: &'static ThisModule, data: Arc<T>) -> Result<Self> {
        // SAFETY: all-zero `file_operations` is C's "no operations".
        let mut fops: bindings::file_operations = unsafe { MaybeUninit::zeroed().assume_init() };
        fops.owner = module.as_ptr();
        fops.open = Some(open::<T>);
        fops.read = Some(bindings::seq_read);
        fops.llseek = Some(bindings::seq_lseek);
        fops.release = Some(bindings::single_release);
        let fops = KBox::new(Opaque::new(fops), GFP_KERNEL)?;
        // SAFETY: valid NUL-terminated name; a NULL parent is the debugfs root.
        let d = unsafe { debugfs_create_dir(dir.as_char_ptr(), core::ptr::null_mut()) };
        // SAFETY: `d` is a dentry or an error pointer (both accepted); `fops`
        // and `data` outlive the file, which `drop` removes first.
        unsafe {
            debugfs_create_file(file.as_char_ptr(), 0o444, d, core::ptr::from_ref::<T>(&data).cast_mut().cast(), fops.get().cast())
        };
        Ok(Self { dir: d, _fops: fops, _data: data, _t: PhantomData })
    }
}

impl<T: Show> Drop for ShowDir<T> {
    fn drop(&mut self) {
        // SAFETY: created in `new`; removal waits for running operations.
        unsafe { debugfs_remove(self.dir) };
    }
}

/// # Safety
///
/// Called by the VFS for a file created by `ShowDir::new::<T>`.
unsafe extern "C" fn open<T: Show>(inode: *mut bindings::inode, file: *mut bindings::file) -> c_int {
    // SAFETY: called by the VFS with a valid inode and file; `i_private` is
    // the `T` given at creation.
    unsafe { bindings::single_open(file, Some(show::<T>), (*inode).i_private) }
}

/// # Safety
///
/// Called by seq_file for a file opened by `open::<T>`.
unsafe extern "C" fn show<T: Show>(m: *mut bindings::seq_file, _v: *mut c_void) -> c_int {
    // SAFETY: single_open() stored our `T` in `private`; it outlives the file.
    let data = unsafe { &*(*m).private.cast::<T>() };
    // SAFETY: `m` is the seq_file of this show call.
    data.show(unsafe { SeqFile::from_raw(m) });
    0
}
