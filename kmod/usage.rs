// SPDX-License-Identifier: GPL-2.0

//! Per-context accounting of NPU memory against its quota.

use core::sync::atomic::{AtomicUsize, Ordering};

use kernel::prelude::*;

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
    pub(crate) fn charge(&self, n: usize) -> Result {
        let mut cur = self.bytes.load(Ordering::Relaxed);
        loop {
            let new = cur.checked_add(n).filter(|&v| v <= self.quota).ok_or_else(crate::errno::edquot)?;
            match self.bytes.compare_exchange_weak(cur, new, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Ok(()),
                Err(actual) => cur = actual,
            }
        }
    }

    pub(crate) fn uncharge(&self, n: usize) {
        self.bytes.fetch_sub(n, Ordering::Relaxed);
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn quota(&self) -> usize {
        self.quota
    }
}
