// SPDX-License-Identifier: GPL-2.0

//! The dispatcher between apps and the device: jobs waiting by priority and
//! turn, and the device's slots (queue × tag, as in ublk), each idle,
//! waiting for a job with a FETCH command, delivering one, or holding one;
//! and the delivery itself, the task work that writes a job's descriptor
//! into the device's memory.
//!
//! Fair share: within a priority class, jobs are served in start-time fair
//! queuing order (Goyal et al.), each job costing one. A job's start tag is
//! the later of its context's previous tag plus one and the tag last
//! dispatched (the virtual time), so contexts with jobs waiting take turns,
//! one job each, and a backlog earns no credit. A context that was idle
//! starts at the virtual time, before the next job of a context that was
//! dispatched at it: a flooding context delays another context's next job
//! by at most the one it has on the device. The device's places are
//! shared the same way: a FETCH_BATCH's last place only takes a job of a
//! context with nothing on the device (while the device holds any job), so
//! that a backlog cannot hold them all while another app's job waits (after
//! blk-mq's fair tag sharing).
//! Classes are strict: high before normal before low.
//!
//! Every job is in exactly one place (a pending tree, a slot, or the hands
//! of whoever took it out under the lock), and whoever takes it out
//! completes it: that makes completion exactly-once whatever races between
//! the device's commit, the app's cancellation and the device going away.
//! Each job also owns one tree node from submission to completion (in the
//! tree, or spare while at a slot), so a device that dies with recovery on
//! hands its jobs back to the front of their queues without allocating.
//!
//! Locking: `queues` is taken inside io_uring's ring lock (issue and
//! cancel calls), in task work and in the recovery work, never the other
//! way round. It is never held across calls into io_uring, user memory
//! access or the drop of a job (which may free NPU memory); those happen
//! after unlocking, on what was taken out under it. Nothing is allocated
//! under it.

use core::{
    mem::size_of,
    sync::atomic::{AtomicU64, Ordering},
};

use kernel::{
    bindings, new_mutex,
    prelude::*,
    rbtree::{RBTree, RBTreeNodeReservation},
    sync::Mutex,
    time::Ktime,
    uaccess::UserSlice,
};

use crate::{
    compat::{
        delayed_work::{impl_has_delayed_work, DelayedWork, DelayedWorkItem},
        transmute::plain_data,
        uring_cmd::{IoUringCmd, IssueFlags, QueuedCmd, TaskWork},
    },
    hw::HwSession,
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

plain_data! {
    /// Where a waiting job sorts in its priority class: its fair-queuing
    /// tag, then submission order.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
    pub(crate) struct JobKey {
        pub(crate) tag: u64,
        pub(crate) id: u64,
    }
}

/// A pending tree. Values are always `Some`: a node's job is taken out
/// before the node is, so that the node's memory can be kept.
type Pending = RBTree<JobKey, Option<KBox<Job>>>;
type Node = RBTreeNodeReservation<JobKey, Option<KBox<Job>>>;

/// A job out of its tree, with the node that takes it back.
struct Held {
    job: KBox<Job>,
    node: Node,
}

enum Slot {
    Idle,
    /// A FETCH waits for a job.
    Waiting(QueuedCmd<HwSession>),
    /// Handed a job; the FETCH completes in the device's task work.
    Delivering(Held),
    /// The device has the job until it commits.
    Busy(Held),
}

/// A queue's FETCH_BATCH.
enum Batch {
    Idle,
    /// Waits for jobs.
    Waiting(QueuedCmd<HwSession>),
    /// Kicked: takes its jobs in the device's task work.
    Delivering,
}

/// The attached device session.
struct Device {
    session: u64,
    flags: u64,
    slots: KVec<Slot>,
    batches: [Batch; uapi::HW_MAX_QUEUES as usize],
}

impl Device {
    fn queue_slots(&mut self, queue: usize) -> &mut [Slot] {
        let depth = uapi::HW_QUEUE_DEPTH as usize;
        &mut self.slots[queue * depth..][..depth]
    }

    fn has_idle_slot(&mut self, queue: usize) -> bool {
        self.queue_slots(queue).iter().any(|s| matches!(s, Slot::Idle))
    }

    /// Whether the device holds any job (delivering or running).
    fn holds_jobs(&self) -> bool {
        self.slots.iter().any(|s| matches!(s, Slot::Delivering(_) | Slot::Busy(_)))
    }

    /// A waiting FETCH_BATCH of a queue with an idle slot, to kick; with
    /// `fresh` false, only one that would take the job: with room for more
    /// than the place it keeps (see [`Queues::pop_fresh`]), or of a device
    /// holding nothing.
    fn take_batch_waiter(&mut self, fresh: bool) -> Option<QueuedCmd<HwSession>> {
        let idle = !self.holds_jobs();
        let takes = |b: &Batch| matches!(b, Batch::Waiting(cmd) if fresh || idle || batch_room(cmd) > 1);
        let q = (0..uapi::HW_MAX_QUEUES as usize).find(|&q| takes(&self.batches[q]) && self.has_idle_slot(q))?;
        match core::mem::replace(&mut self.batches[q], Batch::Delivering) {
            Batch::Waiting(cmd) => Some(cmd),
            _ => None,
        }
    }
}

struct Queues {
    device: Option<Device>,
    /// With no device: jobs wait for one until this time (`ktime_get()` ns).
    recovery_until: Option<i64>,
    /// By dispatch order: high, normal, low.
    pending: [Pending; 3],
    /// Per class, the tag of the job dispatched last.
    vtime: [u64; 3],
    /// Where the next search for a waiting slot starts, so jobs spread
    /// over the device's queues.
    cursor: usize,
}

fn class_of(priority: u8) -> usize {
    match priority {
        uapi::JOB_PRIO_HIGH => 0,
        uapi::JOB_PRIO_NORMAL => 1,
        _ => 2,
    }
}

impl Queues {
    fn serving(&self) -> bool {
        self.device.is_some() || self.recovery_until.is_some()
    }

    /// The device, if `session` is the one attached.
    fn device(&mut self, session: u64) -> Option<&mut Device> {
        self.device.as_mut().filter(|d| d.session == session)
    }

    /// The device's slots, if `session` is the one attached.
    fn slots(&mut self, session: u64) -> Option<&mut KVec<Slot>> {
        self.device(session).map(|d| &mut d.slots)
    }

    fn has_pending(&self) -> bool {
        self.pending.iter().any(|t| t.iter().next().is_some())
    }

    /// Tags `job` for its class and context (start-time fair queuing).
    fn tag(&mut self, job: &mut Job) -> JobKey {
        let class = class_of(job.priority);
        let tag = (job.fair_tag(class) + 1).max(self.vtime[class]);
        job.set_fair_tag(class, tag);
        let key = JobKey { tag, id: job.id };
        job.set_key(key);
        key
    }

    fn push(&mut self, mut job: KBox<Job>, node: Node) {
        job.enqueue();
        let key = job.key();
        self.pending[class_of(job.priority)].insert(node.into_node(key, Some(job)));
    }

    /// A job the device went away with goes back to its place in the
    /// queues (its key sorts it before everything queued after it).
    fn requeue(&mut self, h: Held) {
        let Held { mut job, node } = h;
        job.requeue();
        self.push(job, node);
    }

    /// The next job to dispatch, out of its tree with its node.
    fn pop(&mut self) -> Option<Held> {
        self.pop_first(|_| true)
    }

    /// As [`Queues::pop`], for a device's last free place: the first job of
    /// a context with nothing on the device, so that a flood cannot take
    /// every place and an app arriving meanwhile finds one (as blk-mq shares
    /// a tag set fairly among its active queues).
    fn pop_fresh(&mut self) -> Option<Held> {
        self.pop_first(Job::context_idle_on_device)
    }

    /// The first job in dispatch order that `fits`, out of its tree with
    /// its node.
    fn pop_first(&mut self, fits: impl Fn(&Job) -> bool) -> Option<Held> {
        for (class, tree) in self.pending.iter_mut().enumerate() {
            let Some(key) = tree.iter().find(|(_, j)| j.as_deref().is_some_and(&fits)).map(|(k, _)| *k) else { continue };
            let job = tree.get_mut(&key).and_then(Option::take);
            // Drops the `None` left in the node and keeps its memory.
            let node = tree.remove_node(&key)?.into_reservation();
            self.vtime[class] = self.vtime[class].max(key.tag);
            return job.map(|job| Held { job, node });
        }
        None
    }

    /// A slot waiting for a job, searched queue by queue.
    fn take_waiting(&mut self) -> Option<(usize, QueuedCmd<HwSession>)> {
        let slots = &mut self.device.as_mut()?.slots;
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

    /// Every pending job, out of the trees.
    fn drain_pending(&mut self) -> [Pending; 3] {
        core::mem::take(&mut self.pending)
    }
}

/// Fails every job of `trees` with `res` (the lock not held).
fn fail_all(trees: [Pending; 3], res: isize) {
    for mut tree in trees {
        while let Some(cursor) = tree.cursor_front() {
            let (_, node) = cursor.remove_current();
            if let (_, Some(mut job)) = node.to_key_value() {
                job.complete(res, None);
            }
        }
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

/// How [`Dispatcher::abort`] ends a slot's job.
pub(crate) enum Abort {
    /// The device's task is exiting: with recovery on, the job waits for the
    /// next device; otherwise it fails with `EIO`.
    DeviceGone,
    /// The device cannot take it: fail it with this result.
    Fail(isize),
}

/// (pending, at the device) jobs and the device's state, for debugfs.
pub(crate) struct Snapshot {
    pub(crate) pending: usize,
    pub(crate) busy: usize,
    pub(crate) attached: bool,
    /// Milliseconds left of a recovery window.
    pub(crate) recovering_ms: Option<i64>,
}

#[pin_data]
pub(crate) struct Dispatcher {
    /// Fails what waits for a device once a recovery window ends. First
    /// field: its drop waits for the callback, which uses the rest.
    #[pin]
    recovery_end: DelayedWork<Dispatcher>,
    recovery_ms: u32,
    next_id: AtomicU64,
    next_session: AtomicU64,
    #[pin]
    queues: Mutex<Queues>,
}

impl_has_delayed_work! {
    impl HasDelayedWork for Dispatcher { self.recovery_end }
}

impl DelayedWorkItem for Dispatcher {
    fn run(&self) {
        let now = Ktime::ktime_get().to_ns();
        let mut q = self.queues.lock();
        let Some(until) = q.recovery_until.filter(|_| q.device.is_none()) else {
            return;
        };
        if now < until {
            // Re-armed by a later detach meanwhile.
            drop(q);
            return self.recovery_end.schedule(ms_until(now, until));
        }
        q.recovery_until = None;
        let pending = q.drain_pending();
        drop(q);
        pr_info!("no device came back: jobs waiting for one fail\n");
        fail_all(pending, -(bindings::EIO as isize));
    }
}

fn ms_until(now: i64, until: i64) -> u32 {
    u32::try_from((until - now + 999_999) / 1_000_000).unwrap_or(u32::MAX)
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

impl Dispatcher {
    pub(crate) fn new(recovery_ms: u32) -> impl PinInit<Self> {
        pin_init!(Self {
            recovery_end <- DelayedWork::new(),
            recovery_ms,
            next_id: AtomicU64::new(1),
            next_session: AtomicU64::new(1),
            queues <- new_mutex!(
                Queues {
                    device: None,
                    recovery_until: None,
                    pending: [RBTree::new(), RBTree::new(), RBTree::new()],
                    vtime: [0; 3],
                    cursor: 0,
                },
                "m4npu_dispatcher"
            ),
        })
    }

    /// Whether `device` asked for its jobs to outlive it, and there is a
    /// window to wait in.
    fn recovers(&self, device: &Device) -> bool {
        device.flags & uapi::HW_FLAG_RECOVERY != 0 && self.recovery_ms > 0
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether a job submitted now would be accepted: a device is attached,
    /// or one is being waited for.
    pub(crate) fn serving(&self) -> bool {
        self.queues.lock().serving()
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let q = self.queues.lock();
        let pending = q.pending.iter().map(|t| t.iter().count()).sum();
        let busy = q.device.as_ref().map_or(0, |d| {
            d.slots.iter().filter(|s| matches!(s, Slot::Delivering(_) | Slot::Busy(_))).count()
        });
        let now = Ktime::ktime_get().to_ns();
        let recovering_ms = q.recovery_until.map(|until| (until - now).max(0) / 1_000_000);
        Snapshot { pending, busy, attached: q.device.is_some(), recovering_ms }
    }

    /// A device comes: its session id, or `EBUSY` if one is attached. Jobs
    /// waiting for a recovering device are delivered as it fetches.
    pub(crate) fn attach(&self) -> Result<u64> {
        let mut slots = KVec::with_capacity(SLOTS, GFP_KERNEL)?;
        for _ in 0..SLOTS {
            slots.push(Slot::Idle, GFP_KERNEL)?;
        }
        let session = self.next_session.fetch_add(1, Ordering::Relaxed);
        let mut q = self.queues.lock();
        if q.device.is_some() {
            return Err(EBUSY);
        }
        q.device = Some(Device { session, flags: 0, slots, batches: core::array::from_fn(|_| Batch::Idle) });
        q.recovery_until = None;
        Ok(session)
    }

    /// `IOC_HW_SET_FLAGS` of `session`.
    pub(crate) fn set_flags(&self, session: u64, flags: u64) -> Result {
        if flags & !uapi::HW_FLAGS_ALL != 0 {
            return Err(EINVAL);
        }
        let mut q = self.queues.lock();
        q.device(session).ok_or(ENXIO)?.flags = flags;
        Ok(())
    }

    /// The device of `session` goes (a later call for it does nothing).
    /// With recovery on, the jobs it held go back to the front of their
    /// queues and everything waits for the next device for the recovery
    /// window; otherwise every job waiting or at the device fails with `EIO`.
    pub(crate) fn detach(&self, session: u64) {
        let mut q = self.queues.lock();
        if q.slots(session).is_none() {
            return;
        }
        let Some(mut device) = q.device.take() else { return };
        let recover = self.recovers(&device);
        let pending = if recover {
            for slot in device.slots.iter_mut() {
                // A job nobody waits for any more is not worth a re-run.
                if !matches!(slot, Slot::Delivering(h) | Slot::Busy(h) if h.job.has_app()) {
                    continue;
                }
                if let Slot::Delivering(h) | Slot::Busy(h) = core::mem::replace(slot, Slot::Idle) {
                    q.requeue(h);
                }
            }
            q.recovery_until = Some(Ktime::ktime_get().to_ns() + i64::from(self.recovery_ms) * 1_000_000);
            None
        } else {
            Some(q.drain_pending())
        };
        drop(q);
        if recover {
            self.recovery_end.schedule(self.recovery_ms);
        }
        let eio = -(bindings::EIO as isize);
        for b in device.batches {
            if let Batch::Waiting(cmd) = b {
                cmd.complete_in_task::<AbortFetch>();
            }
        }
        for slot in device.slots {
            match slot {
                Slot::Idle => {}
                Slot::Waiting(cmd) => cmd.complete_in_task::<AbortFetch>(),
                Slot::Delivering(mut h) | Slot::Busy(mut h) => h.job.complete(eio, None),
            }
        }
        if let Some(pending) = pending {
            fail_all(pending, eio);
        }
    }

    /// Queues `job`, or hands it straight to a waiting slot; returns where
    /// it sorts, for [`Dispatcher::cancel`]. `ENXIO` (with the job back)
    /// when no device is attached or being waited for.
    pub(crate) fn submit(&self, mut job: KBox<Job>) -> core::result::Result<JobKey, (KBox<Job>, Error)> {
        let node = match RBTreeNodeReservation::new(GFP_KERNEL) {
            Ok(r) => r,
            Err(e) => return Err((job, e)),
        };
        let mut q = self.queues.lock();
        if !q.serving() {
            return Err((job, ENXIO));
        }
        let key = q.tag(&mut job);
        let Some((i, cmd)) = q.take_waiting() else {
            let fresh = job.context_idle_on_device();
            q.push(job, node);
            let batch = q.device.as_mut().and_then(|d| d.take_batch_waiter(fresh));
            drop(q);
            if let Some(cmd) = batch {
                cmd.complete_in_task::<DeliverBatch>();
            }
            return Ok(key);
        };
        // A waiting slot means nothing is pending: this job goes next.
        let class = class_of(job.priority);
        q.vtime[class] = q.vtime[class].max(key.tag);
        if let Some(d) = q.device.as_mut() {
            d.slots[i] = Slot::Delivering(Held { job, node });
        }
        drop(q);
        cmd.complete_in_task::<Deliver>();
        Ok(key)
    }

    /// FETCH (`commit` = None) or COMMIT_AND_FETCH on slot `i` of `session`;
    /// `cmd` is the device's command, completed here on error.
    pub(crate) fn fetch(&self, session: u64, i: usize, commit: Option<i32>, cmd: QueuedCmd<HwSession>, flags: IssueFlags) {
        let mut q = self.queues.lock();
        let Some(slots) = q.slots(session) else {
            drop(q);
            return cmd.done(-(bindings::ENXIO as isize), flags);
        };
        let committed = match commit {
            None => None,
            Some(result) => match core::mem::replace(&mut slots[i], Slot::Idle) {
                Slot::Busy(h) if valid_result(&h.job, result) => Some((h, result as isize)),
                Slot::Busy(mut h) => {
                    drop(q);
                    h.job.complete(-(bindings::EIO as isize), None);
                    return cmd.done(-(bindings::EINVAL as isize), flags);
                }
                other => {
                    slots[i] = other;
                    drop(q);
                    return cmd.done(-(bindings::EINVAL as isize), flags);
                }
            },
        };
        let mut kick = None;
        let mut refused = None;
        if !matches!(slots[i], Slot::Idle) {
            refused = Some(cmd);
        } else if let Some(h) = q.pop() {
            if let Some(slots) = q.slots(session) {
                slots[i] = Slot::Delivering(h);
            }
            kick = Some(cmd);
        } else if let Some(slots) = q.slots(session) {
            slots[i] = Slot::Waiting(cmd);
        }
        drop(q);
        if let Some((mut h, res)) = committed {
            h.job.complete(res, None);
        }
        if let Some(cmd) = refused {
            cmd.done(-(bindings::EBUSY as isize), flags);
        }
        if let Some(cmd) = kick {
            cmd.complete_in_task::<Deliver>();
        }
    }

    /// The device's task takes slot `i`'s job: its descriptor, or `None` if
    /// the slot holds none (or the session has ended).
    pub(crate) fn start(&self, session: u64, i: usize) -> Option<uapi::HwJob> {
        let mut q = self.queues.lock();
        let slot = q.slots(session)?.get_mut(i)?;
        let Slot::Delivering(mut h) = core::mem::replace(slot, Slot::Idle) else {
            return None;
        };
        h.job.start();
        let hw = h.job.hw;
        *slot = Slot::Busy(h);
        Some(hw)
    }

    /// Ends slot `i`'s job as `how` says (the device could not take it).
    pub(crate) fn abort(&self, session: u64, i: usize, how: Abort) {
        let mut q = self.queues.lock();
        let recover = q.device(session).is_some_and(|d| self.recovers(d));
        let taken = match q.slots(session).and_then(|s| s.get_mut(i)) {
            Some(slot @ (Slot::Delivering(_) | Slot::Busy(_))) => core::mem::replace(slot, Slot::Idle),
            _ => Slot::Idle,
        };
        let (Slot::Delivering(h) | Slot::Busy(h)) = taken else {
            return;
        };
        let res = match how {
            Abort::DeviceGone if recover && h.job.has_app() => return q.requeue(h),
            Abort::DeviceGone => -(bindings::EIO as isize),
            Abort::Fail(res) => res,
        };
        drop(q);
        let mut h = h;
        h.job.complete(res, None);
    }

    /// FETCH_BATCH for `queue` of `session`: kicked at once if jobs wait,
    /// else waits for one.
    pub(crate) fn fetch_batch(&self, session: u64, queue: usize, cmd: QueuedCmd<HwSession>, flags: IssueFlags) {
        let mut q = self.queues.lock();
        let pending = q.has_pending();
        let Some(device) = q.device(session) else {
            drop(q);
            return cmd.done(-(bindings::ENXIO as isize), flags);
        };
        if !matches!(device.batches[queue], Batch::Idle) {
            drop(q);
            return cmd.done(-(bindings::EBUSY as isize), flags);
        }
        if pending && device.has_idle_slot(queue) {
            device.batches[queue] = Batch::Delivering;
            drop(q);
            return cmd.complete_in_task::<DeliverBatch>();
        }
        device.batches[queue] = Batch::Waiting(cmd);
    }

    /// The device's task takes up to `room` jobs for its kicked FETCH_BATCH
    /// `cmd` on `queue` into idle slots, their entries into `out` (which has
    /// the room). With none to take, `cmd` waits again and `None` comes
    /// back; `Err` returns `cmd` to be failed (the session ended).
    pub(crate) fn take_batch(
        &self,
        session: u64,
        queue: usize,
        room: usize,
        cmd: QueuedCmd<HwSession>,
        out: &mut KVec<uapi::HwBatchJob>,
    ) -> core::result::Result<Option<QueuedCmd<HwSession>>, QueuedCmd<HwSession>> {
        let mut q = self.queues.lock();
        if q.slots(session).is_none() {
            return Err(cmd);
        }
        let depth = uapi::HW_QUEUE_DEPTH as usize;
        // Within the capacity the caller reserved, so that pushing never
        // allocates (nor fails and drops a job under the lock).
        let room = room.min(out.capacity());
        for tag in 0..depth {
            if out.len() >= room {
                break;
            }
            let i = queue * depth + tag;
            if !matches!(q.slots(session).map(|s| &s[i]), Some(Slot::Idle)) {
                continue;
            }
            // The last place is kept, unless the device holds nothing: a
            // device with no job always gets one that is waiting, so no
            // miscount of what a context has on the device can stall it.
            let keep = out.len() + 1 == room && q.device.as_ref().is_some_and(Device::holds_jobs);
            let Some(mut h) = (if keep { q.pop_fresh() } else { q.pop() }) else { break };
            h.job.start();
            let entry = uapi::HwBatchJob { tag: tag as u16, pad: [0; 3], job: h.job.hw };
            let _ = out.push(entry, GFP_NOWAIT);
            if let Some(slots) = q.slots(session) {
                slots[i] = Slot::Busy(h);
            }
        }
        let Some(device) = q.device.as_mut() else { return Err(cmd) };
        if out.is_empty() {
            device.batches[queue] = Batch::Waiting(cmd);
            return Ok(None);
        }
        device.batches[queue] = Batch::Idle;
        Ok(Some(cmd))
    }

    /// A kicked FETCH_BATCH that will not take jobs (its task is exiting).
    pub(crate) fn drop_batch(&self, session: u64, queue: usize) {
        let mut q = self.queues.lock();
        if let Some(d) = q.device(session) {
            d.batches[queue] = Batch::Idle;
        }
    }

    /// COMMIT_BATCH on `queue`: all of `results` or, if any names a slot
    /// that does not hold a job (or one twice), none (`EINVAL`).
    pub(crate) fn commit_batch(&self, session: u64, queue: usize, results: &[uapi::HwBatchResult]) -> Result<usize> {
        let depth = uapi::HW_QUEUE_DEPTH as usize;
        let mut seen = 0u64;
        for r in results {
            let bit = 1u64.checked_shl(u32::from(r.tag)).ok_or(EINVAL)?;
            if r.pad != 0 || usize::from(r.tag) >= depth || seen & bit != 0 {
                return Err(EINVAL);
            }
            seen |= bit;
        }
        // The jobs come out under the lock and complete after it.
        let mut done: KVec<(Held, i32)> = KVec::with_capacity(results.len(), GFP_KERNEL)?;
        let mut q = self.queues.lock();
        let slots = q.device(session).ok_or(ENXIO)?.queue_slots(queue);
        if results.iter().any(|r| !matches!(slots[usize::from(r.tag)], Slot::Busy(_))) {
            return Err(EINVAL);
        }
        for r in results {
            // Within the capacity reserved above: pushing never allocates.
            if done.len() == done.capacity() {
                break;
            }
            if let Slot::Busy(h) = core::mem::replace(&mut slots[usize::from(r.tag)], Slot::Idle) {
                let _ = done.push((h, r.result), GFP_NOWAIT);
            }
        }
        // Jobs of any context may be waiting: the batch sorts them out.
        let kick = if q.has_pending() { q.device.as_mut().and_then(|d| d.take_batch_waiter(true)) } else { None };
        drop(q);
        let n = done.len();
        for (mut h, result) in done {
            let res = if valid_result(&h.job, result) { result as isize } else { -(bindings::EIO as isize) };
            h.job.complete(res, None);
        }
        if let Some(cmd) = kick {
            cmd.complete_in_task::<DeliverBatch>();
        }
        Ok(n)
    }

    /// io_uring cancels the FETCH_BATCH `cmd` of `queue`, unless it was
    /// kicked meanwhile (its task work completes it then).
    pub(crate) fn cancel_batch(&self, session: u64, queue: usize, cmd: &IoUringCmd<HwSession>, flags: IssueFlags) {
        let mut q = self.queues.lock();
        let Some(device) = q.device(session) else { return };
        if !matches!(&device.batches[queue], Batch::Waiting(c) if cmd.is(c)) {
            return;
        }
        let taken = core::mem::replace(&mut device.batches[queue], Batch::Idle);
        drop(q);
        if let Batch::Waiting(c) = taken {
            c.done(-(bindings::ECANCELED as isize), flags);
        }
    }

    /// io_uring cancels the FETCH `cmd` of slot `i`, unless it was handed a
    /// job meanwhile (its task work completes it then) or its session ended
    /// (which completed it).
    pub(crate) fn cancel_fetch(&self, session: u64, i: usize, cmd: &IoUringCmd<HwSession>, flags: IssueFlags) {
        let mut q = self.queues.lock();
        let Some(slot) = q.slots(session).and_then(|s| s.get_mut(i)) else {
            return;
        };
        if !matches!(slot, Slot::Waiting(c) if cmd.is(c)) {
            return;
        }
        let taken = core::mem::replace(slot, Slot::Idle);
        drop(q);
        if let Slot::Waiting(c) = taken {
            c.done(-(bindings::ECANCELED as isize), flags);
        }
    }

    /// Takes the job at `key` back from the dispatcher, as far as it can
    /// be. `key` is read under the lock, as [`Dispatcher::submit`] sets it.
    pub(crate) fn cancel(&self, key: impl FnOnce() -> JobKey) -> Canceled {
        let mut q = self.queues.lock();
        let key = key();
        for tree in q.pending.iter_mut() {
            if let Some(Some(job)) = tree.remove(&key) {
                return Canceled::Removed(job);
            }
        }
        for slot in q.device.iter_mut().flat_map(|d| d.slots.iter_mut()) {
            if let Slot::Delivering(h) | Slot::Busy(h) = slot {
                if h.job.id == key.id {
                    return Canceled::Detached(h.job.take_notify());
                }
            }
        }
        Canceled::NotFound
    }
}

// The device's side of a slot's life: what its FETCH commands carry, and
// the task work that hands it jobs.

plain_data! {
    /// pdu of a FETCH / COMMIT_AND_FETCH (its slot) or a FETCH_BATCH (its
    /// queue and room), and where the descriptors go.
    #[derive(Clone, Copy)]
    pub(crate) struct FetchPdu {
        pub(crate) slot: u32,
        /// FETCH_BATCH: entries that fit at `addr`; 0 for a single FETCH.
        pub(crate) batch: u32,
        pub(crate) addr: u64,
    }
}

/// How many jobs a FETCH_BATCH takes at most.
fn batch_room(cmd: &QueuedCmd<HwSession>) -> usize {
    cmd.cmd().pdu::<FetchPdu>().batch as usize
}

/// Task work in the device's task for a kicked FETCH_BATCH: take the jobs
/// waiting (as many as fit), write their entries, complete it with their
/// number; with none left (another fetch took them), it waits again.
pub(crate) struct DeliverBatch;

impl TaskWork<HwSession> for DeliverBatch {
    fn run(cmd: QueuedCmd<HwSession>, flags: IssueFlags) {
        // What is needed is copied out: `cmd` moves on.
        let (npu, session) = {
            let s = cmd.cmd().data();
            (s.npu.clone(), s.id)
        };
        let dispatcher = npu.dispatcher();
        let pdu = cmd.cmd().pdu::<FetchPdu>();
        let (queue, room) = (pdu.slot as usize, pdu.batch as usize);
        if flags.task_dead() {
            dispatcher.drop_batch(session, queue);
            return cmd.done(-(bindings::ECANCELED as isize), flags);
        }
        let mut entries = match KVec::with_capacity(room, GFP_KERNEL) {
            Ok(v) => v,
            Err(_) => {
                dispatcher.drop_batch(session, queue);
                return cmd.done(-(bindings::ENOMEM as isize), flags);
            }
        };
        let cmd = match dispatcher.take_batch(session, queue, room, cmd, &mut entries) {
            Ok(Some(cmd)) => cmd,
            // Waits again.
            Ok(None) => return,
            Err(cmd) => return cmd.done(-(bindings::ENXIO as isize), flags),
        };
        let mut writer = UserSlice::new(pdu.addr as usize, entries.len() * size_of::<uapi::HwBatchJob>()).writer();
        match entries.iter().try_for_each(|e| writer.write(e)) {
            Ok(()) => cmd.done(entries.len() as isize, flags),
            Err(e) => {
                for entry in entries.iter() {
                    if let Ok(slot) = slot_index(pdu.slot as u16, entry.tag) {
                        dispatcher.abort(session, slot, Abort::Fail(-(bindings::EIO as isize)));
                    }
                }
                cmd.done(e.to_errno() as isize, flags);
            }
        }
    }
}

/// Task work in the device's task: write the slot's job descriptor to the
/// device's memory and complete its FETCH.
pub(crate) struct Deliver;

impl TaskWork<HwSession> for Deliver {
    fn run(cmd: QueuedCmd<HwSession>, flags: IssueFlags) {
        let session = cmd.cmd().data();
        let dispatcher = session.npu.dispatcher();
        let pdu = cmd.cmd().pdu::<FetchPdu>();
        let slot = pdu.slot as usize;
        if flags.task_dead() {
            // The device is exiting and its memory is gone.
            dispatcher.abort(session.id, slot, Abort::DeviceGone);
            return cmd.done(-(bindings::ECANCELED as isize), flags);
        }
        // No job: the session ended meanwhile, and took care of it.
        let Some(job) = dispatcher.start(session.id, slot) else {
            return cmd.done(-(bindings::ENXIO as isize), flags);
        };
        let written = UserSlice::new(pdu.addr as usize, size_of::<uapi::HwJob>()).writer().write(&job);
        match written {
            Ok(()) => cmd.done(0, flags),
            Err(e) => {
                dispatcher.abort(session.id, slot, Abort::Fail(-(bindings::EIO as isize)));
                cmd.done(e.to_errno() as isize, flags);
            }
        }
    }
}

/// Task work for a FETCH that outlived its session; completes it as
/// cancelled.
pub(crate) struct AbortFetch;

impl TaskWork<HwSession> for AbortFetch {
    fn run(cmd: QueuedCmd<HwSession>, flags: IssueFlags) {
        cmd.done(-(bindings::ECANCELED as isize), flags);
    }
}
