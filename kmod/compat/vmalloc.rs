// SPDX-License-Identifier: GPL-2.0

//! `vmalloc_user()` memory: zeroed, page-aligned, never swapped, and mappable
//! into user address spaces with `remap_vmalloc_range()`. 6.12's bindings
//! lack vmalloc.h, so the few exported functions are declared here.

use core::ptr::NonNull;

use kernel::{
    bindings,
    error::to_result,
    ffi::{c_int, c_ulong, c_void},
    prelude::*,
};

use super::mm::Vma;

extern "C" {
    fn vmalloc_user_noprof(size: c_ulong) -> *mut c_void;
    fn vfree(addr: *const c_void);
    // `vma` is a `struct vm_area_struct *`, typed void as in miscdevice.rs.
    fn remap_vmalloc_range(vma: *mut c_void, addr: *mut c_void, pgoff: c_ulong) -> c_int;
    // kmod/helpers.c: `get_page()` is a static inline (the page typed void:
    // its binding is opaque).
    fn m4npu_helper_get_page(page: *mut c_void);
}

/// An owned `vmalloc_user()` area.
pub(crate) struct VmallocUser {
    ptr: NonNull<u8>,
    size: usize,
}

// SAFETY: the area is plain memory owned by this value; all access goes
// through raw pointers whose users synchronise among themselves.
unsafe impl Send for VmallocUser {}
// SAFETY: `&self` only hands out the raw pointer.
unsafe impl Sync for VmallocUser {}

impl VmallocUser {
    /// Allocates `size` bytes (a whole number of pages), zeroed.
    pub(crate) fn new(size: usize) -> Result<Self> {
        if size == 0 || size % kernel::page::PAGE_SIZE != 0 {
            return Err(EINVAL);
        }
        // SAFETY: plain allocation call.
        let ptr = unsafe { vmalloc_user_noprof(size as c_ulong) };
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or(ENOMEM)?;
        Ok(Self { ptr, size })
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.size
    }

    /// Maps the pages starting at byte `offset` (page-aligned) into `vma`,
    /// which must not extend past the area.
    pub(crate) fn remap(&self, vma: &Vma, offset: usize) -> Result {
        let pgoff = offset >> kernel::page::PAGE_SHIFT;
        // SAFETY: `vma` is a VMA under construction in an mmap handler (the
        // caller holds mmap_lock for writing); the area is a VM_USERMAP
        // vmalloc area and remap_vmalloc_range() checks the bounds itself.
        to_result(unsafe { remap_vmalloc_range(vma.as_ptr().cast(), self.ptr.as_ptr().cast(), pgoff as c_ulong) })
    }

    /// The page holding byte `offset`, with a reference taken that the
    /// caller hands on (to the mm, as a fault handler does); `None` past
    /// the end.
    pub(crate) fn get_page(&self, offset: usize) -> Option<NonNull<bindings::page>> {
        if offset >= self.size {
            return None;
        }
        // SAFETY: `offset` is inside this live vmalloc area.
        let page = NonNull::new(unsafe { bindings::vmalloc_to_page(self.ptr.as_ptr().add(offset).cast()) })?;
        // SAFETY: a page of this live area; the reference is the caller's.
        unsafe { m4npu_helper_get_page(page.as_ptr().cast()) };
        Some(page)
    }
}

impl Drop for VmallocUser {
    fn drop(&mut self) {
        // SAFETY: allocated by vmalloc_user() and not freed before.
        unsafe { vfree(self.ptr.as_ptr().cast()) };
    }
}
