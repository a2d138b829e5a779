// SPDX-License-Identifier: GPL-2.0

//! VMAs handed to an `mmap` file operation, after upstream `kernel::mm::virt`
//! (`VmaNew`, Linux 6.16): only what this driver needs.

use kernel::{bindings, types::Opaque};

/// A VMA being set up by an `mmap` handler (mmap_lock held for writing).
#[repr(transparent)]
pub(crate) struct Vma(Opaque<bindings::vm_area_struct>);

impl Vma {
    /// # Safety
    ///
    /// `ptr` is a VMA passed to an `mmap` file operation, valid for `'a`,
    /// with mmap_lock held for writing for `'a`.
    pub(crate) unsafe fn from_raw<'a>(ptr: *mut bindings::vm_area_struct) -> &'a Vma {
        // SAFETY: `repr(transparent)`; validity is the caller's promise.
        unsafe { &*ptr.cast() }
    }

    pub(crate) fn as_ptr(&self) -> *mut bindings::vm_area_struct {
        self.0.get()
    }

    /// Bytes covered.
    pub(crate) fn len(&self) -> usize {
        // SAFETY: valid VMA (type invariant); start/end are stable under mmap_lock.
        unsafe {
            let r = &(*self.as_ptr()).__bindgen_anon_1.__bindgen_anon_1;
            r.vm_end - r.vm_start
        }
    }

    /// Offset in the file, in pages.
    pub(crate) fn pgoff(&self) -> usize {
        // SAFETY: as above.
        unsafe { (*self.as_ptr()).vm_pgoff }
    }

    /// `VM_*` flags.
    pub(crate) fn flags(&self) -> usize {
        // SAFETY: as above; `vm_flags` is the read view of the flags union.
        unsafe { (*self.as_ptr()).__bindgen_anon_2.vm_flags }
    }

    /// Clears `VM_*` flags, e.g. `VM_MAYWRITE` so that the mapping can never
    /// become writable.
    pub(crate) fn clear_flags(&self, flags: usize) {
        // SAFETY: valid VMA under construction (type invariant), not yet in
        // the VMA tree, so no lock other than mmap_lock is needed; the
        // writable view of the flags union is `__vm_flags`.
        unsafe { (*self.as_ptr()).__bindgen_anon_2.__vm_flags &= !(flags as bindings::vm_flags_t) };
    }

    /// Installs `ops` and their private data.
    ///
    /// # Safety
    ///
    /// `data` must be what `ops` expect in `vm_private_data`.
    pub(crate) unsafe fn set_ops(&self, ops: &'static bindings::vm_operations_struct, data: *mut kernel::ffi::c_void) {
        // SAFETY: valid VMA under construction (type invariant).
        unsafe {
            (*self.as_ptr()).vm_ops = ops;
            (*self.as_ptr()).vm_private_data = data;
        }
    }
}
