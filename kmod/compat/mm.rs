// SPDX-License-Identifier: GPL-2.0

//! VMAs handed to an `mmap` file operation, after upstream `kernel::mm::virt`
//! (`VmaNew`, Linux 6.16): only what this driver needs.

use core::{marker::PhantomData, ptr::NonNull};

use kernel::{
    bindings,
    sync::{Arc, ArcBorrow},
    types::{ForeignOwnable, Opaque},
};

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

    /// Gives the mapping `T`'s operations, with `data` as its private data:
    /// each VMA of the mapping (a fork's or split's copy too) holds its own
    /// reference until it closes.
    pub(crate) fn set_ops<T: VmOps>(&self, data: Arc<T>) {
        let ops: &'static bindings::vm_operations_struct = &ArcVmOps::<T>::OPS;
        // SAFETY: valid VMA under construction (type invariant); the
        // operations of `ArcVmOps<T>` expect an `Arc<T>` from `into_foreign()`.
        unsafe {
            (*self.as_ptr()).vm_ops = ops;
            (*self.as_ptr()).vm_private_data = data.into_foreign().cast_mut();
        }
    }
}

/// What a mapping whose private data is an `Arc<Self>` does on a page
/// fault (see [`Vma::set_ops`]); opening and closing VMAs take and drop
/// their references.
pub(crate) trait VmOps: Send + Sync + Sized + 'static {
    /// The page for page `pgoff` of the file, referenced for the mm, or
    /// `None` for `SIGBUS`.
    fn fault(this: ArcBorrow<'_, Self>, pgoff: usize) -> Option<NonNull<bindings::page>>;
}

struct ArcVmOps<T>(PhantomData<T>);

impl<T: VmOps> ArcVmOps<T> {
    const OPS: bindings::vm_operations_struct = {
        // SAFETY: all-zero `vm_operations_struct` is C's "no operations".
        let mut ops: bindings::vm_operations_struct = unsafe { core::mem::MaybeUninit::zeroed().assume_init() };
        ops.open = Some(Self::open);
        ops.close = Some(Self::close);
        ops.fault = Some(Self::fault);
        ops
    };

    /// A VMA was copied (fork) or split: it takes its own reference.
    ///
    /// # Safety
    ///
    /// Called by the mm for a VMA given these operations by `set_ops`.
    unsafe extern "C" fn open(vma: *mut bindings::vm_area_struct) {
        // SAFETY: `vm_private_data` holds an `Arc<T>` from `into_foreign()`,
        // alive while any VMA refers to it.
        let data = unsafe { <Arc<T> as ForeignOwnable>::borrow((*vma).vm_private_data) };
        let extra: Arc<T> = data.into();
        // The reference now belongs to the new VMA: same pointer, one more.
        let _ = extra.into_foreign();
    }

    /// # Safety
    ///
    /// Called by the mm for a fault in a VMA with these operations.
    unsafe extern "C" fn fault(vmf: *mut bindings::vm_fault) -> bindings::vm_fault_t {
        // SAFETY: the mm passes a valid fault of a VMA with these operations,
        // whose private data is alive while the VMA is (as in `open`).
        let (data, pgoff) = unsafe {
            let f = &(*vmf).__bindgen_anon_1;
            (<Arc<T> as ForeignOwnable>::borrow((*f.vma).vm_private_data), f.pgoff)
        };
        match T::fault(data, pgoff) {
            Some(page) => {
                // SAFETY: as above; the mm takes over the page reference.
                unsafe { (*vmf).page = page.as_ptr() };
                0
            }
            None => bindings::vm_fault_reason_VM_FAULT_SIGBUS as bindings::vm_fault_t,
        }
    }

    /// A VMA went away: its reference goes.
    ///
    /// # Safety
    ///
    /// Called by the mm, once, for a VMA with these operations.
    unsafe extern "C" fn close(vma: *mut bindings::vm_area_struct) {
        // SAFETY: as in `open`; this VMA's reference is given up once.
        drop(unsafe { <Arc<T> as ForeignOwnable>::from_foreign((*vma).vm_private_data) });
    }
}
