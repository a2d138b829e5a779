// SPDX-License-Identifier: GPL-2.0

//! Jobs: a validated descriptor, the objects it keeps alive, and the one
//! party to tell when it is done.
//!
//! A job holds references on its adapter and BOs from submission until the
//! device is finished with it, so nothing it names can be freed (and the
//! pool pages reused by another context) while the device may still touch
//! them, whatever the app unloads, destroys or closes meanwhile. Telling the
//! app is separate: a job whose app went away (ring cancelled, sync caller
//! interrupted) stays with the device, unannounced, until the device lets go.

use core::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};

use kernel::{bindings, prelude::*, sync::Arc, time::Ktime};

use crate::{
    adapter::Adapter,
    bo::Bo,
    dispatch::JobKey,
    compat::{
        completion::Completion,
        transmute::plain_data,
        uring_cmd::{IssueFlags, QueuedCmd, TaskWork},
    },
    context::Context,
    uapi,
};

/// A context's job counters, for fdinfo and the in-flight limit, and its
/// place in the dispatcher's fair queues.
pub(crate) struct JobStats {
    max_inflight: u32,
    inflight: AtomicU32,
    /// Jobs waiting in the driver for the device.
    queued: AtomicU32,
    /// Nanoseconds its jobs have waited in the driver, all told.
    queue_delay_ns: AtomicU64,
    /// Per priority class, the fair-queuing tag of its last job. Written
    /// under the dispatcher's lock only.
    fair_tags: [AtomicU64; 3],
    submitted: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    busy_ns: AtomicU64,
}

impl JobStats {
    pub(crate) fn new(max_inflight: u32) -> Self {
        Self {
            max_inflight,
            inflight: AtomicU32::new(0),
            queued: AtomicU32::new(0),
            queue_delay_ns: AtomicU64::new(0),
            fair_tags: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
            submitted: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            busy_ns: AtomicU64::new(0),
        }
    }

    /// Takes an in-flight slot, or `EBUSY` at the limit.
    fn admit(&self) -> Result {
        let mut cur = self.inflight.load(Ordering::Relaxed);
        loop {
            if cur >= self.max_inflight {
                return Err(EBUSY);
            }
            match self.inflight.compare_exchange_weak(cur, cur + 1, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Ok(()),
                Err(actual) => cur = actual,
            }
        }
    }

    fn finished(&self, res: isize) {
        self.inflight.fetch_sub(1, Ordering::Relaxed);
        let counter = if res >= 0 { &self.completed } else { &self.failed };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn inflight(&self) -> u32 {
        self.inflight.load(Ordering::Relaxed)
    }

    pub(crate) fn queued(&self) -> u32 {
        self.queued.load(Ordering::Relaxed)
    }

    pub(crate) fn queue_delay_ns(&self) -> u64 {
        self.queue_delay_ns.load(Ordering::Relaxed)
    }

    pub(crate) fn submitted(&self) -> u64 {
        self.submitted.load(Ordering::Relaxed)
    }

    pub(crate) fn completed(&self) -> u64 {
        self.completed.load(Ordering::Relaxed)
    }

    pub(crate) fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    pub(crate) fn busy_ns(&self) -> u64 {
        self.busy_ns.load(Ordering::Relaxed)
    }
}

/// Where a synchronous RUN waits for its result: a kernel `completion`, so
/// that the wait is killable. Only a fatal signal ends it early; any other
/// signal waits on, since the job may be writing the caller's buffers.
#[pin_data]
pub(crate) struct SyncWait {
    #[pin]
    done: Completion,
    /// Valid once `done` is completed.
    result: AtomicI64,
}

impl SyncWait {
    pub(crate) fn new() -> Result<Arc<Self>> {
        Arc::pin_init(pin_init!(Self { done <- Completion::new(), result: AtomicI64::new(0) }), GFP_KERNEL)
    }

    fn set(&self, res: isize) {
        self.result.store(res as i64, Ordering::Relaxed);
        // Orders the store above before the waiter's wake-up.
        self.done.complete_all();
    }

    /// Waits for the result; `None` if the caller is being killed.
    pub(crate) fn wait_killable(&self) -> Option<isize> {
        self.done.wait_for_completion_killable().ok()?;
        Some(self.result.load(Ordering::Relaxed) as isize)
    }

    /// Waits for a result that is known to be on its way.
    pub(crate) fn wait(&self) -> isize {
        self.done.wait_for_completion();
        self.result.load(Ordering::Relaxed) as isize
    }
}

/// The app party of a job.
pub(crate) enum Notify {
    Uring(QueuedCmd<Context>),
    Sync(Arc<SyncWait>),
}

plain_data! {
    /// pdu of a RUN command: where its job sorts in the dispatcher (set
    /// there, under its lock), and its result on the way out.
    #[derive(Clone, Copy)]
    pub(crate) struct RunPdu {
        pub(crate) key: JobKey,
        result: i64,
    }
}

impl RunPdu {
    pub(crate) fn new(job: u64) -> Self {
        Self { key: JobKey { tag: 0, id: job }, result: 0 }
    }
}

/// Task work in the app's ring: post the CQE.
struct RunDone;

impl TaskWork<Context> for RunDone {
    fn run(cmd: QueuedCmd<Context>, flags: IssueFlags) {
        let res = cmd.cmd().pdu::<RunPdu>().result;
        cmd.done(res as isize, flags);
    }
}

impl Notify {
    /// Tells the app: through task work, or directly when `flags` of the
    /// app's ring are at hand (cancellation).
    fn deliver(self, res: isize, flags: Option<IssueFlags>) {
        match (self, flags) {
            (Notify::Uring(cmd), Some(flags)) => cmd.done(res, flags),
            (Notify::Uring(cmd), None) => {
                let pdu = cmd.cmd().pdu::<RunPdu>();
                cmd.cmd().set_pdu(RunPdu { result: res as i64, ..pdu });
                cmd.complete_in_task::<RunDone>();
            }
            (Notify::Sync(w), _) => w.set(res),
        }
    }
}

/// A submitted job.
pub(crate) struct Job {
    pub(crate) id: u64,
    pub(crate) priority: u8,
    /// Where it sorts in the dispatcher's pending trees.
    key: JobKey,
    /// Since when it waits in a pending tree.
    queued_at: Option<Ktime>,
    /// What the device is told (device addresses).
    pub(crate) hw: uapi::HwJob,
    stats: Arc<JobStats>,
    notify: Option<Notify>,
    started: Option<Ktime>,
    _adapter: Option<Arc<Adapter>>,
    _bos: [Option<Arc<Bo>>; 3],
}

/// The objects a descriptor names, resolved in the submitting context.
pub(crate) struct Resolved {
    pub(crate) adapter: Option<Arc<Adapter>>,
    pub(crate) input: Arc<Bo>,
    pub(crate) output: Arc<Bo>,
    pub(crate) state: Option<Arc<Bo>>,
}

/// Checks what needs no handle lookup: `EOPNOTSUPP` for an unknown op,
/// `EINVAL` for anything else.
pub(crate) fn check_descriptor(d: &uapi::Job) -> Result {
    if d.op == 0 || d.op >= uapi::JOB_OP_COUNT {
        return Err(crate::errno::eopnotsupp());
    }
    if d.flags != 0 || d.priority > uapi::JOB_PRIO_LOW {
        return Err(EINVAL);
    }
    if [d.input.pad, d.output.pad, d.state.pad] != [0; 3] {
        return Err(EINVAL);
    }
    if d.input.handle == 0 || d.input.length == 0 || d.output.handle == 0 || d.output.length == 0 {
        return Err(EINVAL);
    }
    if d.state.handle == 0 && (d.state.offset != 0 || d.state.length != 0) {
        return Err(EINVAL);
    }
    if d.state.handle != 0 && d.state.length == 0 {
        return Err(EINVAL);
    }
    match d.op {
        uapi::JOB_OP_CLASSIFY if d.adapter == 0 => Err(EINVAL),
        uapi::JOB_OP_GENERATE if d.state.handle == 0 => Err(EINVAL),
        _ => Ok(()),
    }
}

/// The device range of `r` inside `bo`, or `EINVAL` if it does not fit.
fn device_range(bo: &Bo, r: &uapi::BoRange) -> Result<uapi::HwRange> {
    let end = r.offset.checked_add(r.length).ok_or(EINVAL)?;
    if end > bo.size() as u64 {
        return Err(EINVAL);
    }
    Ok(uapi::HwRange { addr: bo.addr() + r.offset, len: r.length })
}

fn overlap(a: &uapi::HwRange, b: &uapi::HwRange) -> bool {
    a.len != 0 && b.len != 0 && a.addr < b.addr + b.len && b.addr < a.addr + a.len
}

impl Job {
    /// A job for descriptor `d` (already through [`check_descriptor`]) on
    /// the objects it names, accounted to `stats` once [`Job::admit`]ted.
    pub(crate) fn new(
        id: u64,
        context_id: u64,
        d: &uapi::Job,
        objs: Resolved,
        stats: &Arc<JobStats>,
    ) -> Result<KBox<Job>> {
        let input = device_range(&objs.input, &d.input)?;
        let output = device_range(&objs.output, &d.output)?;
        let state = match &objs.state {
            Some(bo) => device_range(bo, &d.state)?,
            None => uapi::HwRange::default(),
        };
        if overlap(&input, &output) || overlap(&input, &state) || overlap(&output, &state) {
            return Err(EINVAL);
        }
        let adapter = match &objs.adapter {
            Some(a) => uapi::HwRange { addr: a.mem().addr(), len: a.size() as u64 },
            None => uapi::HwRange::default(),
        };
        let hw = uapi::HwJob {
            id,
            context_id,
            op: d.op,
            priority: d.priority,
            flags: d.flags,
            pad: 0,
            adapter,
            input,
            output,
            state,
        };
        let job = KBox::new(
            Job {
                id,
                priority: d.priority,
                key: JobKey { tag: 0, id },
                queued_at: None,
                hw,
                stats: stats.clone(),
                notify: None,
                started: None,
                _adapter: objs.adapter,
                _bos: [Some(objs.input), Some(objs.output), objs.state],
            },
            GFP_KERNEL,
        )?;
        Ok(job)
    }

    /// Takes one of the context's in-flight slots: `EBUSY` at the limit.
    /// From here on the job counts as submitted, and completing it frees
    /// the slot.
    pub(crate) fn admit(&self) -> Result {
        self.stats.admit()?;
        self.stats.submitted.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    pub(crate) fn set_notify(&mut self, n: Notify) {
        self.notify = Some(n);
    }

    /// The context's fair-queuing tag in priority class `class`.
    pub(crate) fn fair_tag(&self, class: usize) -> u64 {
        self.stats.fair_tags[class].load(Ordering::Relaxed)
    }

    pub(crate) fn set_fair_tag(&self, class: usize, tag: u64) {
        self.stats.fair_tags[class].store(tag, Ordering::Relaxed);
    }

    pub(crate) fn key(&self) -> JobKey {
        self.key
    }

    /// Sets where the job sorts, and tells its RUN command for cancellation.
    pub(crate) fn set_key(&mut self, key: JobKey) {
        self.key = key;
        if let Some(Notify::Uring(cmd)) = &self.notify {
            let pdu = cmd.cmd().pdu::<RunPdu>();
            cmd.cmd().set_pdu(RunPdu { key, ..pdu });
        }
    }

    /// Whether no other job of its context is on the device (all its
    /// context's jobs in flight but this one are waiting in the driver).
    pub(crate) fn context_idle_on_device(&self) -> bool {
        let others_queued = self.stats.queued().saturating_sub(u32::from(self.queued_at.is_some()));
        self.stats.inflight().saturating_sub(1) <= others_queued
    }

    /// The job goes into a pending tree.
    pub(crate) fn enqueue(&mut self) {
        self.queued_at = Some(Ktime::ktime_get());
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
    }

    /// The job leaves its pending tree.
    fn dequeue(&mut self) {
        if let Some(at) = self.queued_at.take() {
            let ns = Ktime::ktime_get().to_ns() - at.to_ns();
            self.stats.queue_delay_ns.fetch_add(ns.max(0) as u64, Ordering::Relaxed);
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The device has the job from now on.
    pub(crate) fn start(&mut self) {
        self.dequeue();
        self.started = Some(Ktime::ktime_get());
    }

    /// The device went away with the job, which waits for the next one.
    pub(crate) fn requeue(&mut self) {
        self.account_busy();
    }

    /// Whether an app still waits for the job's result.
    pub(crate) fn has_app(&self) -> bool {
        self.notify.is_some()
    }

    fn account_busy(&mut self) {
        if let Some(started) = self.started.take() {
            let ns = Ktime::ktime_get().to_ns() - started.to_ns();
            self.stats.busy_ns.fetch_add(ns.max(0) as u64, Ordering::Relaxed);
        }
    }

    /// The output capacity the device may report.
    pub(crate) fn output_len(&self) -> u64 {
        self.hw.output.len
    }

    /// Ends the job for its app with `res`; see [`Notify::deliver`] for
    /// `flags`. Later calls (and the drop) do nothing.
    pub(crate) fn complete(&mut self, res: isize, flags: Option<IssueFlags>) {
        self.dequeue();
        self.account_busy();
        if let Some(n) = self.notify.take() {
            self.stats.finished(res);
            n.deliver(res, flags);
        }
    }

    /// Detaches the app (it went away); the job itself carries on.
    pub(crate) fn take_notify(&mut self) -> Option<Notify> {
        let n = self.notify.take();
        if n.is_some() {
            self.stats.finished(-(bindings::ECANCELED as isize));
        }
        n
    }
}

impl Notify {
    /// For a party detached with [`Job::take_notify`].
    pub(crate) fn cancel(self, flags: Option<IssueFlags>) {
        self.deliver(-(bindings::ECANCELED as isize), flags);
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        // Every path completes a job before dropping it; should one not,
        // the app still hears of it rather than waiting forever.
        self.complete(-(bindings::EIO as isize), None);
    }
}
