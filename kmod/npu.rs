// SPDX-License-Identifier: GPL-2.0

//! Device-wide state, shared by every context: the NPU memory pool, the
//! foundation model pinned at its start, and the job dispatcher.

use core::sync::atomic::{AtomicU64, Ordering};

use kernel::{
    new_mutex,
    prelude::*,
    rbtree::RBTree,
    sync::{Arc, Mutex},
};

use crate::{
    usage::Usage,
    compat::{
        debugfs::Show,
        seq_file::{seq_print, SeqFile},
    },
    dispatch::Dispatcher,
    firmware::{Firmware, Model},
    job::JobStats,
    pool::Pool,
    uapi, DRIVER_VERSION,
};

/// What the global view lists of a live context.
struct ContextEntry {
    pid: i32,
    usage: Arc<Usage>,
    jobs: Arc<JobStats>,
}

#[pin_data]
pub(crate) struct Npu {
    next_context_id: AtomicU64,
    /// Shared with every BO and mapping of it, which may outlive a context.
    pool: Arc<Pool>,
    /// Set once at load, after the firmware is validated.
    #[pin]
    firmware: Mutex<Option<Arc<Firmware>>>,
    /// Bytes of NPU memory one context may hold.
    ctx_quota: usize,
    /// Jobs one context may have in flight.
    ctx_max_jobs: u32,
    #[pin]
    dispatcher: Dispatcher,
    /// Open contexts by id, for the debugfs view. A leaf lock: nothing else
    /// is taken while it is held.
    #[pin]
    contexts: Mutex<RBTree<u64, ContextEntry>>,
}

impl Npu {
    pub(crate) fn new(pool_size: usize, ctx_quota: usize, ctx_max_jobs: u32, recovery_ms: u32) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            next_context_id: AtomicU64::new(1),
            pool: Arc::pin_init(Pool::new(pool_size), GFP_KERNEL)?,
            firmware <- new_mutex!(None, "m4npu_firmware"),
            ctx_quota,
            ctx_max_jobs,
            dispatcher <- Dispatcher::new(recovery_ms),
            contexts <- new_mutex!(RBTree::new(), "m4npu_contexts"),
        })
    }

    /// A context id never handed out before while the module is loaded.
    pub(crate) fn new_context_id(&self) -> u64 {
        self.next_context_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    pub(crate) fn ctx_quota(&self) -> usize {
        self.ctx_quota
    }

    pub(crate) fn ctx_max_jobs(&self) -> u32 {
        self.ctx_max_jobs
    }

    pub(crate) fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    pub(crate) fn model(&self) -> Option<Model> {
        self.firmware.lock().as_ref().map(|f| f.model())
    }

    /// The pinned model, to read its bytes without holding the lock.
    pub(crate) fn firmware(&self) -> Option<Arc<Firmware>> {
        self.firmware.lock().clone()
    }

    pub(crate) fn set_firmware(&self, fw: Arc<Firmware>) {
        *self.firmware.lock() = Some(fw);
    }

    pub(crate) fn register_context(&self, id: u64, pid: i32, usage: Arc<Usage>, jobs: Arc<JobStats>) -> Result {
        self.contexts.lock().try_create_and_insert(id, ContextEntry { pid, usage, jobs }, GFP_KERNEL)?;
        Ok(())
    }

    pub(crate) fn unregister_context(&self, id: u64) {
        let entry = self.contexts.lock().remove(&id);
        drop(entry);
    }
}

/// `/sys/kernel/debug/m4npu/state`: firmware, pool and every context.
impl Show for Npu {
    fn show(&self, m: &SeqFile) {
        seq_print!(m, "driver:\tm4npu {} (uapi {}.{})\n", DRIVER_VERSION, uapi::UAPI_VERSION >> 16, uapi::UAPI_VERSION & 0xffff);
        seq_print!(m, "pool:\t{} of {} bytes used\n", self.pool.used(), self.pool.size());
        match self.model() {
            Some(model) => {
                let end = model.name.iter().position(|&b| b == 0).unwrap_or(model.name.len());
                let name = core::str::from_utf8(&model.name[..end]).unwrap_or("?");
                seq_print!(m, "firmware:\t{} ({} bytes) sha256 ", name, model.size);
                for b in model.hash {
                    seq_print!(m, "{:02x}", b);
                }
                seq_print!(m, "\n");
            }
            None => seq_print!(m, "firmware:\tnone\n"),
        }
        let s = self.dispatcher.snapshot();
        match (s.attached, s.recovering_ms) {
            (true, _) => seq_print!(m, "device:\tattached\n"),
            (false, Some(ms)) => seq_print!(m, "device:\trecovering ({} ms left)\n", ms),
            (false, None) => seq_print!(m, "device:\tnone\n"),
        }
        seq_print!(m, "jobs:\t{} pending, {} at the device\n", s.pending, s.busy);
        let contexts = self.contexts.lock();
        let n = contexts.iter().count();
        seq_print!(m, "contexts:\t{}\n", n);
        for (id, c) in contexts.iter() {
            seq_print!(m, "context {}:\tpid {} memory {} of {} bytes", id, c.pid, c.usage.bytes(), c.usage.quota());
            let j = &c.jobs;
            seq_print!(
                m,
                " jobs: {} in flight, {} queued, {} completed, {} failed, busy {} ns, queued {} ns\n",
                j.inflight(),
                j.queued(),
                j.completed(),
                j.failed(),
                j.busy_ns(),
                j.queue_delay_ns(),
            );
        }
    }
}
