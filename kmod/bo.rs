// SPDX-License-Identifier: GPL-2.0

//! Buffer objects: page ranges of NPU memory owned by one context.
//!
//! A BO is refcounted: the context's handle table holds one reference and
//! every VMA mapping it holds another, so BO_DESTROY while mapped leaves the
//! memory in place until the last munmap. Only then is it zeroed and freed,
//! and never can another context's allocation show through an old mapping.

use core::sync::atomic::{AtomicUsize, Ordering};

use kernel::{
    bindings,
    page::{PAGE_SHIFT, PAGE_SIZE},
    prelude::*,
    sync::Arc,
    types::ForeignOwnable,
};

use crate::{compat::mm::Vma, npu::Npu};

/// mmap offsets: `handle << BO_OFFSET_SHIFT` (so a BO may be up to 4 GiB).
pub(crate) const BO_OFFSET_SHIFT: u32 = 32;

/// The BO handle a file page offset names.
pub(crate) fn handle_of(pgoff: usize) -> Option<u32> {
    u32::try_from(pgoff >> (BO_OFFSET_SHIFT - PAGE_SHIFT as u32)).ok()
}

/// The page within its BO that a file page offset names.
pub(crate) fn page_in_bo(pgoff: usize) -> usize {
    pgoff & ((1usize << (BO_OFFSET_SHIFT - PAGE_SHIFT as u32)) - 1)
}

/// Memory charged to one context. Shared with its BOs, which may outlive
/// the context's file through mappings.
pub(crate) struct Usage {
    bytes: AtomicUsize,
    quota: usize,
}

impl Usage {
    pub(crate) fn new(quota: usize) -> Self {
        Self { bytes: AtomicUsize::new(0), quota }
    }

    /// Charges `n` bytes, or fails with `crate::errno::edquot()` past the quota.
    fn charge(&self, n: usize) -> Result {
        let mut cur = self.bytes.load(Ordering::Relaxed);
        loop {
            let new = cur.checked_add(n).filter(|&v| v <= self.quota).ok_or_else(crate::errno::edquot)?;
            match self.bytes.compare_exchange_weak(cur, new, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Ok(()),
                Err(actual) => cur = actual,
            }
        }
    }

    fn uncharge(&self, n: usize) {
        self.bytes.fetch_sub(n, Ordering::Relaxed);
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn quota(&self) -> usize {
        self.quota
    }
}

pub(crate) struct Bo {
    npu: Arc<Npu>,
    usage: Arc<Usage>,
    /// Device address: offset in the pool.
    offset: usize,
    size: usize,
}

impl Bo {
    /// A zeroed BO of `size` bytes (page-rounded by the caller), charged to `usage`.
    pub(crate) fn new(npu: &Arc<Npu>, usage: &Arc<Usage>, size: usize) -> Result<Arc<Self>> {
        usage.charge(size)?;
        let offset = match npu.pool().alloc(size) {
            Ok(o) => o,
            Err(e) => {
                usage.uncharge(size);
                return Err(e);
            }
        };
        // From here on, `Drop` undoes the charge and the allocation.
        let bo = Bo { npu: npu.clone(), usage: usage.clone(), offset, size };
        Ok(Arc::new(bo, GFP_KERNEL)?)
    }

    /// Device address: where the device finds the BO in NPU memory.
    pub(crate) fn addr(&self) -> u64 {
        self.offset as u64
    }

    /// Bytes (whole pages).
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Kernel view of the memory, for the driver's own writes (adapters).
    ///
    /// # Safety
    ///
    /// Nobody else writes the range meanwhile (it is not mapped by an app).
    pub(crate) unsafe fn kernel_ptr(&self) -> *mut u8 {
        // SAFETY: `offset` is inside the pool (allocated from it).
        unsafe { self.npu.pool().mem().as_ptr().add(self.offset) }
    }

    /// The page holding byte `offset` of the BO, referenced for the caller.
    fn get_page(&self, offset: usize) -> Option<core::ptr::NonNull<bindings::page>> {
        if offset >= self.size {
            return None;
        }
        self.npu.pool().mem().get_page(self.offset + offset)
    }

    /// Maps `vma`, starting `start` bytes into the BO (page-aligned); the
    /// VMA keeps the BO alive.
    pub(crate) fn mmap(self: Arc<Self>, vma: &Vma, start: usize) -> Result {
        let end = start.checked_add(vma.len()).ok_or(EINVAL)?;
        if end > self.size {
            return Err(EINVAL);
        }
        self.npu.pool().mem().remap(vma, self.offset + start)?;
        // SAFETY: BO_VM_OPS expect an `Arc<Bo>` from `into_foreign()`.
        unsafe { vma.set_ops(&BO_VM_OPS, self.into_foreign().cast_mut()) };
        Ok(())
    }
}

impl Drop for Bo {
    fn drop(&mut self) {
        // SAFETY: allocated in `new()`; the last reference is gone, so no
        // handle or mapping uses the range.
        unsafe { self.npu.pool().free(self.offset, self.size) };
        self.usage.uncharge(self.size);
    }
}

static BO_VM_OPS: bindings::vm_operations_struct = {
    // SAFETY: all-zero `vm_operations_struct` is C's "no operations".
    let mut ops: bindings::vm_operations_struct = unsafe { core::mem::MaybeUninit::zeroed().assume_init() };
    ops.open = Some(bo_vm_open);
    ops.close = Some(bo_vm_close);
    ops.fault = Some(bo_vm_fault);
    ops
};

/// A VMA was copied (fork) or split: it takes its own reference.
///
/// # Safety
///
/// Called by the mm for a VMA set up by `Bo::mmap`.
unsafe extern "C" fn bo_vm_open(vma: *mut bindings::vm_area_struct) {
    // SAFETY: `vm_private_data` of a VMA with BO_VM_OPS holds an `Arc<Bo>`
    // from `into_foreign()`, alive while any VMA refers to it.
    let bo = unsafe { <Arc<Bo> as ForeignOwnable>::borrow((*vma).vm_private_data) };
    let extra: Arc<Bo> = bo.into();
    // The reference now belongs to the new VMA: same pointer, one more count.
    let _ = extra.into_foreign();
}

/// A page of a mapping is touched again after the app dropped it
/// (`madvise(MADV_DONTNEED)` zaps a shared mapping's page tables, and the
/// mm cannot re-make what `remap_vmalloc_range` put there): the same NPU
/// memory goes back in, never a fresh page.
///
/// # Safety
///
/// Called by the mm for a fault in a VMA set up by `Bo::mmap` or copied
/// from one.
unsafe extern "C" fn bo_vm_fault(vmf: *mut bindings::vm_fault) -> bindings::vm_fault_t {
    // SAFETY: the mm passes a valid fault of a VMA with BO_VM_OPS, whose
    // `vm_private_data` holds an `Arc<Bo>` alive while the VMA is (as in
    // `bo_vm_open`).
    let (bo, pgoff) = unsafe {
        let f = &(*vmf).__bindgen_anon_1;
        (<Arc<Bo> as ForeignOwnable>::borrow((*f.vma).vm_private_data), f.pgoff)
    };
    match bo.get_page(page_in_bo(pgoff) * PAGE_SIZE) {
        Some(page) => {
            // SAFETY: as above; the mm takes over the page reference.
            unsafe { (*vmf).page = page.as_ptr() };
            0
        }
        None => bindings::vm_fault_reason_VM_FAULT_SIGBUS as bindings::vm_fault_t,
    }
}

/// A VMA went away: drop its reference.
///
/// # Safety
///
/// Called by the mm, once, for a VMA set up by `Bo::mmap` or copied from one.
unsafe extern "C" fn bo_vm_close(vma: *mut bindings::vm_area_struct) {
    // SAFETY: as in `bo_vm_open`; this VMA's reference is given up once.
    drop(unsafe { <Arc<Bo> as ForeignOwnable>::from_foreign((*vma).vm_private_data) });
}
