// SPDX-License-Identifier: GPL-2.0

//! Delayed work on the system workqueue, after the `DelayedWork` that newer
//! kernels' `kernel::workqueue` has and 6.12's lacks: a work item embedded
//! in a pinned owner, run once some time after it is (re)armed.

use core::marker::PhantomData;

use kernel::{bindings, prelude::*, time::msecs_to_jiffies, types::Opaque};

/// What the owner of a [`DelayedWork`] does when it runs (upstream:
/// `WorkItem`).
pub(crate) trait DelayedWorkItem: Sync {
    /// Runs in a kworker, in process context.
    fn run(&self);
}

/// Where the owner keeps its [`DelayedWork`]; implement it with
/// [`impl_has_delayed_work!`] (upstream: `HasDelayedWork`, `impl_has_delayed_work!`).
///
/// # Safety
///
/// `OFFSET` is the byte offset of a `DelayedWork<Self>` field in `Self`.
pub(crate) unsafe trait HasDelayedWork: DelayedWorkItem {
    const OFFSET: usize;
}

/// Implements [`HasDelayedWork`] for `$owner` with its field `$field`.
macro_rules! impl_has_delayed_work {
    (impl HasDelayedWork for $owner:ty { self.$field:ident }) => {
        // SAFETY: the offset is that of `$field`, which the check below
        // proves is a `DelayedWork<$owner>`.
        unsafe impl $crate::compat::delayed_work::HasDelayedWork for $owner {
            const OFFSET: usize = {
                #[allow(dead_code)]
                fn field_is_the_work(o: &$owner) -> &$crate::compat::delayed_work::DelayedWork<$owner> {
                    &o.$field
                }
                ::core::mem::offset_of!($owner, $field)
            };
        }
    };
}
pub(crate) use impl_has_delayed_work;

extern "C" {
    // kmod/helpers.c: INIT_DELAYED_WORK() is a macro.
    fn m4npu_helper_init_delayed_work(
        dwork: *mut bindings::delayed_work,
        func: unsafe extern "C" fn(*mut bindings::work_struct),
    );
}

/// A delayed work item of its owner `T`. Declare it as `T`'s first field:
/// its drop waits for a running callback, and fields drop in order, so the
/// rest of `T` is still whole while it does.
#[repr(transparent)]
#[pin_data(PinnedDrop)]
pub(crate) struct DelayedWork<T: HasDelayedWork> {
    #[pin]
    inner: Opaque<bindings::delayed_work>,
    _owner: PhantomData<T>,
}

// SAFETY: the workqueue API may be used from any thread.
unsafe impl<T: HasDelayedWork> Send for DelayedWork<T> {}
// SAFETY: as above.
unsafe impl<T: HasDelayedWork> Sync for DelayedWork<T> {}

impl<T: HasDelayedWork> DelayedWork<T> {
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            // SAFETY: `slot` is valid, pinned memory for a delayed_work.
            inner <- Opaque::ffi_init(|slot| unsafe { m4npu_helper_init_delayed_work(slot, Self::run) }),
            _owner: PhantomData,
        })
    }

    /// Runs `T::run` `ms` milliseconds from now; an armed item is re-armed.
    pub(crate) fn schedule(&self, ms: u32) {
        // SAFETY: initialised in `new` and pinned; `system_wq` lives forever.
        unsafe {
            bindings::mod_delayed_work_on(
                bindings::wq_misc_consts_WORK_CPU_UNBOUND as _,
                bindings::system_wq,
                self.inner.get(),
                msecs_to_jiffies(ms),
            )
        };
    }

    /// # Safety
    ///
    /// Called by the workqueue only, for an item initialised in `new`.
    unsafe extern "C" fn run(work: *mut bindings::work_struct) {
        // `work` is the first member of `struct delayed_work`, which is
        // `DelayedWork<T>` (transparent), at `T::OFFSET` in its owner.
        let owner = work.cast::<u8>().wrapping_sub(T::OFFSET).cast::<T>();
        // SAFETY: the owner outlives its item: dropping the item waits for
        // this callback (`PinnedDrop`), and the item drops first.
        unsafe { (*owner).run() };
    }
}

#[pinned_drop]
impl<T: HasDelayedWork> PinnedDrop for DelayedWork<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: initialised in `new`; waits for a running callback and
        // leaves the item idle. Nothing re-arms it once its owner drops.
        unsafe { bindings::cancel_delayed_work_sync(self.inner.get()) };
    }
}
