// SPDX-License-Identifier: GPL-2.0

//! Buffer objects: page ranges of NPU memory owned by one context.
//!
//! A BO is refcounted: the context's handle table holds one reference and
//! every VMA mapping it holds another, so BO_DESTROY while mapped leaves the
//! memory in place until the last munmap. Only then is it zeroed and freed,
//! and never can another context's allocation show through an old mapping.

use kernel::{
    bindings,
    page::{PAGE_SHIFT, PAGE_SIZE},
    prelude::*,
    sync::{Arc, ArcBorrow},
};

use crate::{
    compat::mm::{Vma, VmOps},
    pool::{Pool, Range},
    usage::Usage,
};

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

pub(crate) struct Bo {
    mem: Range,
    usage: Arc<Usage>,
}

impl Bo {
    /// A zeroed BO of `size` bytes (page-rounded by the caller), charged to
    /// `usage`. Shared (in an `Arc`) before an app can map it.
    pub(crate) fn new(pool: &Arc<Pool>, usage: &Arc<Usage>, size: usize) -> Result<Self> {
        usage.charge(size)?;
        match pool.alloc(size) {
            // From here on, `Drop` undoes the charge.
            Ok(mem) => Ok(Bo { mem, usage: usage.clone() }),
            Err(e) => {
                usage.uncharge(size);
                Err(e)
            }
        }
    }

    /// Device address: where the device finds the BO in NPU memory.
    pub(crate) fn addr(&self) -> u64 {
        self.mem.offset() as u64
    }

    /// Bytes (whole pages).
    pub(crate) fn size(&self) -> usize {
        self.mem.len()
    }

    /// The memory, for the driver's own writes (adapters) before the BO is
    /// shared.
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        self.mem.bytes_mut()
    }

    /// The page holding byte `offset` of the BO, referenced for the caller.
    fn get_page(&self, offset: usize) -> Option<core::ptr::NonNull<bindings::page>> {
        if offset >= self.size() {
            return None;
        }
        self.mem.pool().mem().get_page(self.mem.offset() + offset)
    }

    /// Maps `vma`, starting `start` bytes into the BO (page-aligned); the
    /// VMA keeps the BO alive.
    pub(crate) fn mmap(self: Arc<Self>, vma: &Vma, start: usize) -> Result {
        let end = start.checked_add(vma.len()).ok_or(EINVAL)?;
        if end > self.size() {
            return Err(EINVAL);
        }
        self.mem.pool().mem().remap(vma, self.mem.offset() + start)?;
        vma.set_ops(self);
        Ok(())
    }
}

impl Drop for Bo {
    fn drop(&mut self) {
        // The range zeroes and frees itself after this.
        self.usage.uncharge(self.size());
    }
}

/// A page of a mapping is touched again after the app dropped it
/// (`madvise(MADV_DONTNEED)` zaps a shared mapping's page tables, and the
/// mm cannot re-make what `remap_vmalloc_range` put there): the same NPU
/// memory goes back in, never a fresh page.
impl VmOps for Bo {
    fn fault(bo: ArcBorrow<'_, Bo>, pgoff: usize) -> Option<core::ptr::NonNull<bindings::page>> {
        bo.get_page(page_in_bo(pgoff) * PAGE_SIZE)
    }
}
