// SPDX-License-Identifier: GPL-2.0

//! Device-wide state, shared by every context: the NPU memory pool and the
//! foundation model pinned at its start.

use core::sync::atomic::{AtomicU64, Ordering};

use kernel::{new_mutex, prelude::*, sync::Mutex};

use crate::{firmware::Model, pool::Pool};

#[pin_data]
pub(crate) struct Npu {
    next_context_id: AtomicU64,
    #[pin]
    pool: Pool,
    /// Set once at load, after the firmware is validated.
    #[pin]
    model: Mutex<Option<Model>>,
    /// Bytes of NPU memory one context may hold.
    ctx_quota: usize,
}

impl Npu {
    pub(crate) fn new(pool_size: usize, ctx_quota: usize) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            next_context_id: AtomicU64::new(1),
            pool <- Pool::new(pool_size),
            model <- new_mutex!(None, "m4npu_model"),
            ctx_quota,
        })
    }

    /// A context id never handed out before while the module is loaded.
    pub(crate) fn new_context_id(&self) -> u64 {
        self.next_context_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    pub(crate) fn ctx_quota(&self) -> usize {
        self.ctx_quota
    }

    pub(crate) fn model(&self) -> Option<Model> {
        *self.model.lock()
    }

    pub(crate) fn set_model(&self, model: Model) {
        *self.model.lock() = Some(model);
    }
}
