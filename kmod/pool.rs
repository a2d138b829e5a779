// SPDX-License-Identifier: GPL-2.0

//! NPU memory: one pool, allocated at load, never swapped, handed out in
//! whole pages. A range's offset in the pool is its device address.
//!
//! Locking: `map` guards the page bitmap and nothing else; ranges are zeroed
//! outside it, before they return to the free set, so free memory is always
//! zero and a new allocation needs no clearing.

use core::sync::atomic::{AtomicUsize, Ordering};

use kernel::{new_mutex, page::PAGE_SIZE, prelude::*, sync::Mutex};

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

    /// Allocates `size` bytes (a whole, non-zero number of pages), zeroed;
    /// returns the offset. `ENOSPC` when no free run is large enough.
    pub(crate) fn alloc(&self, size: usize) -> Result<usize> {
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
        Ok(start * PAGE_SIZE)
    }

    /// Zeroes and frees a range from [`Pool::alloc`].
    ///
    /// # Safety
    ///
    /// The range was allocated and is freed once; nothing (kernel or user
    /// mapping) uses it any more.
    pub(crate) unsafe fn free(&self, offset: usize, size: usize) {
        // SAFETY: inside the pool and unused, per the caller.
        unsafe { core::ptr::write_bytes(self.mem.as_ptr().add(offset), 0, size) };
        let mut map = self.map.lock();
        set_range(&mut map, offset / PAGE_SIZE, size / PAGE_SIZE, false);
        drop(map);
        self.used.fetch_sub(size, Ordering::Relaxed);
    }
}
