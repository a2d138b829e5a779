// SPDX-License-Identifier: GPL-2.0

//! Device-wide state, shared by every context.

use core::sync::atomic::{AtomicU64, Ordering};

use kernel::{prelude::*, sync::Arc};

/// The NPU as the driver sees it.
pub(crate) struct Npu {
    next_context_id: AtomicU64,
}

impl Npu {
    pub(crate) fn new() -> Result<Arc<Self>> {
        Ok(Arc::new(Self { next_context_id: AtomicU64::new(1) }, GFP_KERNEL)?)
    }

    /// A context id never handed out before while the module is loaded.
    pub(crate) fn new_context_id(&self) -> u64 {
        self.next_context_id.fetch_add(1, Ordering::Relaxed)
    }
}
