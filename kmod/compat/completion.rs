// SPDX-License-Identifier: GPL-2.0

//! `struct completion`, after upstream `kernel::sync::Completion` (Linux
//! 6.15), with the killable wait that upstream lacks.

use kernel::{bindings, prelude::*, types::Opaque};

// kmod/helpers.c: `init_completion()` is a static inline.
extern "C" {
    fn m4npu_helper_init_completion(x: *mut bindings::completion);
}

/// A one-shot event that tasks can wait for.
#[pin_data]
pub(crate) struct Completion {
    #[pin]
    inner: Opaque<bindings::completion>,
}

// SAFETY: a completion is made to be completed and waited for from any
// task.
unsafe impl Send for Completion {}
// SAFETY: as above.
unsafe impl Sync for Completion {}

impl Completion {
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            // SAFETY: `slot` is valid, pinned memory for a completion.
            inner <- Opaque::ffi_init(|slot| unsafe { m4npu_helper_init_completion(slot) }),
        })
    }

    /// Wakes every waiter, now and later. Stores before it are seen by
    /// the waiters after their wait.
    pub(crate) fn complete_all(&self) {
        // SAFETY: initialised in `new`.
        unsafe { bindings::complete_all(self.inner.get()) };
    }

    /// Waits, uninterruptibly.
    pub(crate) fn wait_for_completion(&self) {
        // SAFETY: initialised in `new`.
        unsafe { bindings::wait_for_completion(self.inner.get()) };
    }

    /// Waits; `Err` if a fatal signal ended the wait first.
    pub(crate) fn wait_for_completion_killable(&self) -> Result {
        // SAFETY: initialised in `new`.
        match unsafe { bindings::wait_for_completion_killable(self.inner.get()) } {
            0 => Ok(()),
            _ => Err(ERESTARTSYS),
        }
    }
}
