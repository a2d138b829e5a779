// SPDX-License-Identifier: GPL-2.0

//! The dispatcher between apps and the device: jobs waiting by priority,
//! and the device's slots (queue × tag, as in ublk), each idle, waiting
//! for a job with a FETCH command, delivering one, or holding one.
//!
//! Every job is in exactly one place (a pending tree, a slot, or the hands
//! of whoever took it out under the lock), and whoever takes it out
//! completes it: that makes completion exactly-once whatever races between
//! the device's commit, the app's cancellation and the device going away.
//!
//! Locking: `inner` is taken inside io_uring's ring lock (issue and cancel
//! calls) and in task work, never the other way round. It is never held
//! across calls into io_uring, user memory access or the drop of a job
//! (which may free NPU memory); those happen after unlocking, on what was
//! taken out under it. Nothing is allocated under it.

use core::sync::atomic::{AtomicU64, Ordering};

use kernel::{
    bindings, new_mutex,
    prelude::*,
    rbtree::{RBTree, RBTreeNodeReservation},
    sync::Mutex,
};

use crate::{
    compat::uring_cmd::{IoUringCmd, IssueFlags, QueuedCmd},
    hw,
    job::{Job, Notify},
    uapi,
};

/// Slots of an attached device.
pub(crate) const SLOTS: usize = uapi::HW_MAX_QUEUES as usize * uapi::HW_QUEUE_DEPTH as usize;

/// The slot of (`queue`, `tag`), or `EINVAL`.
pub(crate) fn slot_index(queue: u16, tag: u16) -> Result<usize> {
    if queue >= uapi::HW_MAX_QUEUES || tag >= uapi::HW_QUEUE_DEPTH {
        return Err(EINVAL);
    }
    Ok(queue as usize * uapi::HW_QUEUE_DEPTH as usize + tag as usize)
}

enum Slot {
    Idle,
    /// A FETCH waits for a job.
    Waiting(QueuedCmd),
    /// Handed a job; the FETCH completes in the device's task work.
    Delivering(KBox<Job>),
    /// The device has the job until it commits.
    Busy(KBox<Job>),
}

struct Dispatcher {
    /// Present while a device is attached.
    slots: Option<KVec<Slot>>,
    /// By dispatch order: high, normal, low; FIFO (by id) within each.
    pending: [RBTree<u64, KBox<Job>>; 3],
    /// Where the next search for a waiting slot starts, so jobs spread
    /// over the device's queues.
    cursor: usize,
}

fn queue_of(priority: u8) -> usize {
    match priority {
        uapi::JOB_PRIO_HIGH => 0,
        uapi::JOB_PRIO_NORMAL => 1,
        _ => 2,
    }
}

impl Dispatcher {
    fn pop_pending(&mut self) -> Option<KBox<Job>> {
        self.pending.iter_mut().find_map(|tree| {
            let (_, node) = tree.cursor_front()?.remove_current();
            Some(node.to_key_value().1)
        })
    }

    /// A slot waiting for a job, searched queue by queue.
    fn take_waiting(&mut self) -> Option<(usize, QueuedCmd)> {
        let slots = self.slots.as_mut()?;
        let queues = uapi::HW_MAX_QUEUES as usize;
        for step in 0..SLOTS {
            let j = (self.cursor + step) % SLOTS;
            let i = (j % queues) * uapi::HW_QUEUE_DEPTH as usize + j / queues;
            if let Slot::Waiting(_) = slots[i] {
                self.cursor = j + 1;
                let Slot::Waiting(cmd) = core::mem::replace(&mut slots[i], Slot::Idle) else {
                    unreachable!()
                };
                return Some((i, cmd));
            }
        }
        None
    }
}

/// What a cancellation found.
pub(crate) enum Canceled {
    /// Not yet at the device: the job is the caller's to complete.
    Removed(KBox<Job>),
    /// At the device, which keeps it; the app's party is the caller's.
    Detached(Option<Notify>),
    /// Already being completed.
    NotFound,
}

#[pin_data]
pub(crate) struct Jobs {
    next_id: AtomicU64,
    #[pin]
    inner: Mutex<Dispatcher>,
}

/// `include/linux/err.h`: errnos are 1..=4095.
const MAX_ERRNO: i32 = 4095;

/// The result a device may commit for `job`: output bytes within its
/// capacity, or an errno.
fn valid_result(job: &Job, result: i32) -> bool {
    match u64::try_from(result) {
        Ok(n) => n <= job.output_len(),
        Err(_) => result >= -MAX_ERRNO,
    }
}

impl Jobs {
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            next_id: AtomicU64::new(1),
            inner <- new_mutex!(
                Dispatcher { slots: None, pending: [RBTree::new(), RBTree::new(), RBTree::new()], cursor: 0 },
                "m4npu_jobs"
            ),
        })
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn attached(&self) -> bool {
        self.inner.lock().slots.is_some()
    }

    /// (pending, at the device) counts, for debugfs.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let d = self.inner.lock();
        let pending = d.pending.iter().map(|t| t.iter().count()).sum();
        let busy = d.slots.as_ref().map_or(0, |s| {
            s.iter().filter(|s| matches!(s, Slot::Delivering(_) | Slot::Busy(_))).count()
        });
        (pending, busy)
    }

    /// A device comes: `EBUSY` if one is already attached.
    pub(crate) fn attach(&self) -> Result {
        let mut slots = KVec::with_capacity(SLOTS, GFP_KERNEL)?;
        for _ in 0..SLOTS {
            slots.push(Slot::Idle, GFP_KERNEL)?;
        }
        let mut d = self.inner.lock();
        if d.slots.is_some() {
            return Err(EBUSY);
        }
        d.slots = Some(slots);
        Ok(())
    }

    /// The device went: every job waiting or at the device fails with `EIO`.
    pub(crate) fn detach(&self) {
        let (slots, pending) = {
            let mut d = self.inner.lock();
            let pending = core::mem::take(&mut d.pending);
            (d.slots.take(), pending)
        };
        let eio = -(bindings::EIO as isize);
        for slot in slots.into_iter().flatten() {
            match slot {
                Slot::Idle => {}
                // Cannot happen: a queued FETCH holds the device file open.
                Slot::Waiting(cmd) => cmd.complete_in_task(hw::abort_fetch),
                Slot::Delivering(mut job) | Slot::Busy(mut job) => job.complete(eio, None),
            }
        }
        for mut tree in pending {
            while let Some(cursor) = tree.cursor_front() {
                let (_, node) = cursor.remove_current();
                node.to_key_value().1.complete(eio, None);
            }
        }
    }

    /// Queues `job`, or hands it straight to a waiting slot. `ENXIO` (with
    /// the job back) when no device is attached.
    pub(crate) fn submit(&self, job: KBox<Job>) -> core::result::Result<(), (KBox<Job>, Error)> {
        let reservation = match RBTreeNodeReservation::new(GFP_KERNEL) {
            Ok(r) => r,
            Err(e) => return Err((job, e)),
        };
        let mut d = self.inner.lock();
        if d.slots.is_none() {
            return Err((job, ENXIO));
        }
        let Some((i, cmd)) = d.take_waiting() else {
            let prio = queue_of(job.priority);
            d.pending[prio].insert(reservation.into_node(job.id, job));
            return Ok(());
        };
        if let Some(slots) = d.slots.as_mut() {
            slots[i] = Slot::Delivering(job);
        }
        drop(d);
        cmd.complete_in_task(hw::deliver);
        Ok(())
    }

    /// FETCH (`commit` = None) or COMMIT_AND_FETCH on slot `i`; `cmd` is
    /// the device's command, completed here on error.
    pub(crate) fn fetch(&self, i: usize, commit: Option<i32>, cmd: QueuedCmd, flags: IssueFlags) {
        let mut d = self.inner.lock();
        let Some(slots) = d.slots.as_mut() else {
            drop(d);
            return cmd.done(-(bindings::ENXIO as isize), flags);
        };
        let committed = match commit {
            None => None,
            Some(result) => match core::mem::replace(&mut slots[i], Slot::Idle) {
                Slot::Busy(job) if valid_result(&job, result) => Some((job, result as isize)),
                Slot::Busy(mut job) => {
                    drop(d);
                    job.complete(-(bindings::EIO as isize), None);
                    return cmd.done(-(bindings::EINVAL as isize), flags);
                }
                other => {
                    slots[i] = other;
                    drop(d);
                    return cmd.done(-(bindings::EINVAL as isize), flags);
                }
            },
        };
        let mut kick = None;
        let mut refused = None;
        if !matches!(slots[i], Slot::Idle) {
            refused = Some(cmd);
        } else if let Some(job) = d.pop_pending() {
            if let Some(slots) = d.slots.as_mut() {
                slots[i] = Slot::Delivering(job);
            }
            kick = Some(cmd);
        } else if let Some(slots) = d.slots.as_mut() {
            slots[i] = Slot::Waiting(cmd);
        }
        drop(d);
        if let Some((mut job, res)) = committed {
            job.complete(res, None);
        }
        if let Some(cmd) = refused {
            cmd.done(-(bindings::EBUSY as isize), flags);
        }
        if let Some(cmd) = kick {
            cmd.complete_in_task(hw::deliver);
        }
    }

    /// The device's task takes slot `i`'s job: its descriptor, or `None` if
    /// the slot holds none.
    pub(crate) fn start(&self, i: usize) -> Option<uapi::HwJob> {
        let mut d = self.inner.lock();
        let slot = d.slots.as_mut()?.get_mut(i)?;
        let Slot::Delivering(mut job) = core::mem::replace(slot, Slot::Idle) else {
            return None;
        };
        job.start();
        let hw = job.hw;
        *slot = Slot::Busy(job);
        Some(hw)
    }

    /// Fails slot `i`'s job with `res` (the device could not take it).
    pub(crate) fn abort(&self, i: usize, res: isize) {
        let taken = {
            let mut d = self.inner.lock();
            match d.slots.as_mut().and_then(|s| s.get_mut(i)) {
                Some(slot) => core::mem::replace(slot, Slot::Idle),
                None => Slot::Idle,
            }
        };
        match taken {
            Slot::Busy(mut job) | Slot::Delivering(mut job) => job.complete(res, None),
            // Nothing else is ever aborted; put nothing back either way.
            Slot::Idle | Slot::Waiting(_) => debug_assert!(matches!(taken, Slot::Idle)),
        }
    }

    /// io_uring cancels the FETCH `cmd` of slot `i`, unless it was handed a
    /// job meanwhile (its task work completes it then).
    pub(crate) fn cancel_fetch(&self, i: usize, cmd: &IoUringCmd, flags: IssueFlags) {
        let mut d = self.inner.lock();
        let Some(slot) = d.slots.as_mut().and_then(|s| s.get_mut(i)) else {
            return;
        };
        if !matches!(slot, Slot::Waiting(c) if cmd.is(c)) {
            return;
        }
        let taken = core::mem::replace(slot, Slot::Idle);
        drop(d);
        if let Slot::Waiting(c) = taken {
            c.done(-(bindings::ECANCELED as isize), flags);
        }
    }

    /// Takes job `id` back from the dispatcher, as far as it can be.
    pub(crate) fn cancel(&self, id: u64) -> Canceled {
        let mut d = self.inner.lock();
        for tree in d.pending.iter_mut() {
            if let Some(job) = tree.remove(&id) {
                return Canceled::Removed(job);
            }
        }
        for slot in d.slots.iter_mut().flatten() {
            if let Slot::Delivering(job) | Slot::Busy(job) = slot {
                if job.id == id {
                    return Canceled::Detached(job.take_notify());
                }
            }
        }
        Canceled::NotFound
    }
}
