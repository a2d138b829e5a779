// SPDX-License-Identifier: GPL-2.0

//! NPU memory: one pool, allocated at load, never swapped, handed out in
//! whole pages. A range's offset in the pool is its device address.
//!
//! A [`Range`] owns its pages and is the only way the driver touches them:
//! it may fill them while it alone holds the range (`&mut`), read them once
//! they are [`Frozen`] for good, and zeroes them when it drops. Apps map only
//! a BO's range, through the BO (which never views its bytes); the device
//! maps the whole pool, the model read-only, and is trusted (root-only), as
//! a DMA master is, not to write memory it holds no job for.
//!
//! Locking: `map` guards the page bitmap and nothing else; ranges are zeroed
//! outside it, before they return to the free set, so free memory is always
//! zero and a new allocation needs no clearing.

use core::sync::atomic::{AtomicUsize, Ordering};

use kernel::{
    new_mutex,
    page::PAGE_SIZE,
    prelude::*,
    sync::{Arc, Mutex},
};

use crate::compat::vmalloc::VmallocUser;

#[pin_data]
pub(crate) struct Pool {
    mem: VmallocUser,
    /// Bit set: page in use. Bits past the last page are set.
    #[pin]
    map: Mutex<KVec<u64>>,
    used: AtomicUsize,
}

fn bit(map: &[u64], i: usize) -> bool {
    map[i / 64] & (1 << (i % 64)) != 0
}

fn set_range(map: &mut [u64], start: usize, n: usize, used: bool) {
    for i in start..start + n {
        if used {
            map[i / 64] |= 1 << (i % 64);
        } else {
            map[i / 64] &= !(1 << (i % 64));
        }
    }
}

/// First fit: the lowest run of `n` free pages.
fn find_free(map: &[u64], pages: usize, n: usize) -> Option<usize> {
    let (mut start, mut run) = (0, 0);
    let mut i = 0;
    while i < pages {
        if i % 64 == 0 && map[i / 64] == u64::MAX {
            // A full word: skip it whole.
            run = 0;
            i += 64;
            start = i;
            continue;
        }
        if bit(map, i) {
            run = 0;
            start = i + 1;
        } else {
            run += 1;
            if run == n {
                return Some(start);
            }
        }
        i += 1;
    }
    None
}

impl Pool {
    /// A zeroed pool of `size` bytes (a whole number of pages).
    pub(crate) fn new(size: usize) -> impl PinInit<Self, Error> {
        let pages = size / PAGE_SIZE;
        let words = pages.div_ceil(64);
        try_pin_init!(Self {
            map <- new_mutex!(
                {
                    let mut map = KVec::from_elem(0u64, words, GFP_KERNEL)?;
                    set_range(&mut map, pages, words * 64 - pages, true);
                    map
                },
                "m4npu_pool_map"
            ),
            mem: VmallocUser::new(size)?,
            used: AtomicUsize::new(0),
        }? Error)
    }

    pub(crate) fn size(&self) -> usize {
        self.mem.len()
    }

    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    pub(crate) fn mem(&self) -> &VmallocUser {
        &self.mem
    }

    /// Allocates `size` bytes (a whole, non-zero number of pages), zeroed.
    /// `ENOSPC` when no free run is large enough.
    pub(crate) fn alloc(self: &Arc<Self>, size: usize) -> Result<Range> {
        if size == 0 || size % PAGE_SIZE != 0 {
            return Err(EINVAL);
        }
        let n = size / PAGE_SIZE;
        let pages = self.mem.len() / PAGE_SIZE;
        let mut map = self.map.lock();
        let start = find_free(&map, pages, n).ok_or(ENOSPC)?;
        set_range(&mut map, start, n, true);
        drop(map);
        self.used.fetch_add(size, Ordering::Relaxed);
        Ok(Range { pool: self.clone(), offset: start * PAGE_SIZE, size })
    }

    /// Zeroes `size` bytes at `offset` and returns them to the free set.
    fn free(&self, offset: usize, size: usize) {
        // SAFETY: a range being given up by its `Range`, the only kernel
        // user of it, so inside the pool, and no reference views it.
        unsafe { core::ptr::write_bytes(self.mem.as_ptr().add(offset), 0, size) };
        let mut map = self.map.lock();
        set_range(&mut map, offset / PAGE_SIZE, size / PAGE_SIZE, false);
        drop(map);
        self.used.fetch_sub(size, Ordering::Relaxed);
    }
}

/// Pages of NPU memory owned by one object; see the module doc for who
/// else may touch them.
pub(crate) struct Range {
    pool: Arc<Pool>,
    /// Device address: offset in the pool.
    offset: usize,
    size: usize,
}

impl Range {
    pub(crate) fn offset(&self) -> usize {
        self.offset
    }

    /// Bytes (whole pages).
    pub(crate) fn len(&self) -> usize {
        self.size
    }

    pub(crate) fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// The memory, for the driver to fill while it alone holds the range.
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: allocated from the pool, so inside it; `&mut self` is the
        // only way in (module doc), and apps map a range only once a BO
        // holds it behind an `Arc`, which gives no `&mut`.
        unsafe { core::slice::from_raw_parts_mut(self.pool.mem.as_ptr().add(self.offset), self.size) }
    }

    /// Gives back all but the first `size` bytes (whole pages, non-zero).
    pub(crate) fn shrink(&mut self, size: usize) -> Result {
        if size == 0 || size % PAGE_SIZE != 0 || size > self.size {
            return Err(EINVAL);
        }
        self.pool.free(self.offset + size, self.size - size);
        self.size = size;
        Ok(())
    }

    /// Makes the range read-only for as long as it lives.
    pub(crate) fn freeze(self) -> Frozen {
        Frozen(self)
    }
}

impl Drop for Range {
    fn drop(&mut self) {
        self.pool.free(self.offset, self.size);
    }
}

/// A range nobody writes any more: the driver has no `&mut` to it, apps
/// cannot map it, and the device maps it read-only (the pinned model).
pub(crate) struct Frozen(Range);

impl Frozen {
    pub(crate) fn bytes(&self) -> &[u8] {
        let r = &self.0;
        // SAFETY: inside the pool (allocated from it), and nobody writes it
        // (type invariant), so shared views are sound.
        unsafe { core::slice::from_raw_parts(r.pool.mem.as_ptr().add(r.offset), r.size) }
    }
}
