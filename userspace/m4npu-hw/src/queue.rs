//! A device queue: slots (tags) that take jobs from the driver over the
//! queue's own io_uring, and the jobs they hold.

use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, RawFd};

use io_uring::{squeue, IoUring};
use m4npu::ring_core::{CmdRing, Sqe};
use m4npu::{Error, Op, Result};
use m4npu_uapi as uapi;
use nix::errno::Errno;

use crate::sys::cmd_bytes;
use crate::{HwDevice, NpuMemory};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// No command outstanding, no job.
    Idle,
    /// A FETCH or COMMIT_AND_FETCH (named) is queued or waits in the driver.
    Waiting(&'static str),
    /// Holds a job until it is committed.
    Holding,
}

const FETCH: &str = "HW_FETCH";
const COMMIT: &str = "HW_COMMIT_AND_FETCH";

/// One queue of the device: slots `0..depth`, each waiting for a job or
/// holding one, on an io_uring of its own (one queue per worker thread).
/// Create a queue on the thread that serves it: the driver completes a
/// slot's FETCH (writing its job) in the task that submitted it.
///
/// ```no_run
/// # fn serve(dev: &m4npu_hw::HwDevice) -> m4npu::Result<()> {
/// let mut queue = dev.queue(0, 8)?;
/// loop {
///     for job in queue.fetch()? {
///         // ... run it, then:
///         queue.commit(job, Err(m4npu::Errno::ENOSYS))?;
///     }
/// }
/// # }
/// ```
pub struct HwQueue<'m> {
    // Dropped first: the ring's file goes before the slots it writes to.
    ring: CmdRing<squeue::Entry>,
    dev: &'m HwDevice,
    id: u16,
    /// Where the driver writes the job it hands a slot: the `addr` of the
    /// slot's commands, written from the driver while one is outstanding.
    jobs: Box<[UnsafeCell<uapi::HwJob>]>,
    slots: Vec<Slot>,
    /// Jobs received and not yet returned (kept while an error is reported).
    ready: Vec<HwJob<'m>>,
    failed: VecDeque<Error>,
}

impl<'m> HwQueue<'m> {
    pub(crate) fn new(dev: &'m HwDevice, id: u16, depth: u16) -> Result<Self> {
        let info = dev.info();
        if id >= info.max_queues || depth == 0 || depth > info.queue_depth {
            return Err(Error::HwCommand { op: FETCH, queue: id, tag: depth, source: Errno::EINVAL });
        }
        // One command per slot at most, so the rings never fill.
        let ring = IoUring::new(u32::from(depth).next_power_of_two())
            .map_err(|source| Error::Io { what: "creating the device queue's io_uring", source })?;
        let mut q = Self {
            ring: CmdRing::new(ring),
            dev,
            id,
            jobs: (0..depth).map(|_| UnsafeCell::new(uapi::HwJob::default())).collect(),
            slots: vec![Slot::Idle; depth as usize],
            ready: Vec::new(),
            failed: VecDeque::new(),
        };
        q.rearm()?;
        // The driver refuses a bad queue or a slot in use as it takes the FETCH.
        q.enter(0)?;
        match q.failed.pop_front() {
            Some(e) => Err(e),
            None => Ok(q),
        }
    }

    /// The queue's number.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// Its slots.
    pub fn depth(&self) -> u16 {
        self.slots.len() as u16
    }

    /// Jobs held: received and not yet committed.
    pub fn held(&self) -> usize {
        self.slots.iter().filter(|s| **s == Slot::Holding).count()
    }

    /// Sends what is queued (commits), waits for at least one job, and
    /// returns all jobs at hand. Returns at once, with none, if no slot
    /// waits for a job. A failed slot command is reported as an error
    /// first (the jobs received meanwhile come with the next call); the
    /// slot is then idle until [`HwQueue::rearm`].
    pub fn fetch(&mut self) -> Result<Vec<HwJob<'m>>> {
        self.collect(true)
    }

    /// As [`HwQueue::fetch`], without waiting.
    pub fn try_fetch(&mut self) -> Result<Vec<HwJob<'m>>> {
        self.collect(false)
    }

    fn collect(&mut self, wait: bool) -> Result<Vec<HwJob<'m>>> {
        self.enter(0)?;
        let waiting = |q: &Self| q.slots.iter().any(|s| matches!(s, Slot::Waiting(_)));
        while wait && self.ready.is_empty() && self.failed.is_empty() && waiting(self) {
            self.enter(1)?;
        }
        if let Some(e) = self.failed.pop_front() {
            return Err(e);
        }
        Ok(std::mem::take(&mut self.ready))
    }

    /// Returns `job`'s result to the driver: `Ok(n)` output bytes (at most
    /// the output range's length) or an errno for the app; the slot then
    /// waits for the next job. Sent with the next fetch or [`HwQueue::flush`].
    pub fn commit(&mut self, job: HwJob<'m>, result: std::result::Result<usize, Errno>) -> Result<()> {
        self.commit_raw(job, crate::result_code(result))
    }

    /// As [`HwQueue::commit`] with the raw result, checked by the driver
    /// only (for tests of the driver).
    pub fn commit_raw(&mut self, job: HwJob<'m>, result: i32) -> Result<()> {
        if job.queue != self.id || self.slots.get(job.tag as usize) != Some(&Slot::Holding) {
            return Err(Error::HwCommand { op: COMMIT, queue: job.queue, tag: job.tag, source: Errno::EINVAL });
        }
        self.push(COMMIT, job.tag, result)
    }

    /// Makes every idle slot wait for a job again.
    pub fn rearm(&mut self) -> Result<()> {
        for tag in 0..self.slots.len() {
            if self.slots[tag] == Slot::Idle {
                self.push(FETCH, tag as u16, 0)?;
            }
        }
        Ok(())
    }

    /// Sends queued commands (commits) to the driver without waiting. It
    /// takes no completions, so a poll on the queue's fd afterwards wakes
    /// for every job that arrives.
    pub fn flush(&mut self) -> Result<()> {
        crate::enter_ring(&self.ring, 0)
    }

    fn push(&mut self, op: &'static str, tag: u16, result: i32) -> Result<()> {
        let cmd_op = if op == FETCH { uapi::URING_CMD_HW_FETCH } else { uapi::URING_CMD_HW_COMMIT_AND_FETCH };
        let cmd = uapi::HwCmd { queue: self.id, tag, result, addr: self.jobs[tag as usize].get() as u64 };
        // SAFETY: the driver writes a `HwJob` to `addr`, the slot's cell,
        // which stays allocated while the command is outstanding (see Drop).
        let sqe = unsafe { Sqe::uring_cmd(self.dev.as_raw_fd(), cmd_op, cmd_bytes(&cmd)) }.user_data(u64::from(tag));
        while !self.ring.push(&sqe) {
            self.enter(0)?;
        }
        self.slots[tag as usize] = Slot::Waiting(op);
        Ok(())
    }

    /// `io_uring_enter`: submits, waits for `want` completions, takes them.
    fn enter(&mut self, want: usize) -> Result<()> {
        crate::enter_ring(&self.ring, want)?;
        for cqe in self.ring.reap() {
            let tag = cqe.user_data as u16;
            let Some(slot) = self.slots.get_mut(tag as usize) else { continue };
            let op = match *slot {
                Slot::Waiting(op) => op,
                _ => FETCH,
            };
            if cqe.res >= 0 {
                // SAFETY: the driver wrote the job before completing the
                // command, and no command on this slot is outstanding now.
                let raw = unsafe { std::ptr::read_volatile(self.jobs[tag as usize].get()) };
                *slot = Slot::Holding;
                self.ready.push(HwJob { raw, queue: self.id, tag, mem: &self.dev.mem });
            } else {
                *slot = Slot::Idle;
                let source = Errno::from_raw(-cqe.res);
                self.failed.push_back(Error::HwCommand { op, queue: self.id, tag, source });
            }
        }
        Ok(())
    }
}

impl Drop for HwQueue<'_> {
    fn drop(&mut self) {
        // A command may still be outstanding when the ring goes: the driver
        // could write its slot after we are gone. Such slots stay allocated.
        if self.slots.iter().any(|s| matches!(s, Slot::Waiting(_))) {
            std::mem::forget(std::mem::take(&mut self.jobs));
        }
    }
}

impl AsRawFd for HwQueue<'_> {
    /// The queue's io_uring: readable when jobs or failures arrive that no
    /// fetch has taken yet. Poll it after a fetch that returned `Ok` (an
    /// error leaves the jobs that came with it for the next call) or a flush.
    fn as_raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}

/// A job the driver handed the device, held until committed with
/// [`HwQueue::commit`]. A job dropped uncommitted stays in flight for its
/// app until the device file is closed (then it fails with `EIO`).
#[derive(Debug)]
pub struct HwJob<'m> {
    pub(super) raw: uapi::HwJob,
    pub(super) queue: u16,
    pub(super) tag: u16,
    pub(super) mem: &'m NpuMemory,
}

/// A job's memory, for the device to work on.
#[derive(Debug)]
pub struct JobBuffers<'j> {
    pub input: &'j [u8],
    pub output: &'j mut [u8],
    /// The state range (read and written back), if the job has one.
    pub state: Option<&'j mut [u8]>,
    /// The adapter's blob, if the job has one.
    pub adapter: Option<&'j [u8]>,
}

fn overlap(a: &std::ops::Range<usize>, b: &std::ops::Range<usize>) -> bool {
    !a.is_empty() && !b.is_empty() && a.start < b.end && b.start < a.end
}

impl HwJob<'_> {
    /// The descriptor as the driver wrote it.
    pub fn raw(&self) -> &uapi::HwJob {
        &self.raw
    }

    /// Unique while the module is loaded.
    pub fn id(&self) -> u64 {
        self.raw.id
    }

    /// The submitting app's context.
    pub fn context_id(&self) -> u64 {
        self.raw.context_id
    }

    /// The job's op, if this library knows it.
    pub fn op(&self) -> Option<Op> {
        Op::from_raw(self.raw.op)
    }

    pub fn queue(&self) -> u16 {
        self.queue
    }

    pub fn tag(&self) -> u16 {
        self.tag
    }

    /// The input bytes.
    pub fn input(&self) -> Result<&[u8]> {
        let r = self.mem.span("input", self.raw.input, false)?;
        // SAFETY: from `span`.
        Ok(unsafe { self.mem.slice(r) })
    }

    /// The adapter's blob, if any.
    pub fn adapter(&self) -> Result<Option<&[u8]>> {
        if self.raw.adapter.len == 0 {
            return Ok(None);
        }
        let r = self.mem.span("adapter", self.raw.adapter, false)?;
        // SAFETY: from `span`.
        Ok(Some(unsafe { self.mem.slice(r) }))
    }

    /// Input, output, state and adapter at once, checked: inside NPU
    /// memory, output and state outside the read-only model and
    /// overlapping nothing else.
    ///
    /// NPU memory is shared with the submitting apps, which can still
    /// write their buffers while the device works (or name one range in two
    /// concurrent jobs), as they could with any DMA engine: the device then
    /// computes garbage, as real hardware would.
    pub fn buffers(&mut self) -> Result<JobBuffers<'_>> {
        let mem = self.mem;
        let input = mem.span("input", self.raw.input, false)?;
        let output = mem.span("output", self.raw.output, true)?;
        let state = (self.raw.state.len > 0).then(|| mem.span("state", self.raw.state, true)).transpose()?;
        let adapter = (self.raw.adapter.len > 0).then(|| mem.span("adapter", self.raw.adapter, false)).transpose()?;
        let mut writable = vec![("output", &output)];
        writable.extend(state.as_ref().map(|s| ("state", s)));
        let mut all = writable.clone();
        all.push(("input", &input));
        all.extend(adapter.as_ref().map(|a| ("adapter", a)));
        for (w, wr) in &writable {
            if let Some((o, _)) = all.iter().find(|(o, or)| o != w && overlap(wr, or)) {
                return Err(Error::BadHwJob(format!("job {}: the {w} range overlaps the {o} range", self.raw.id)));
            }
        }
        // SAFETY: all from `span`; the writable ranges overlap nothing else
        // returned, and `&mut self` keeps this job from handing them out twice.
        unsafe {
            Ok(JobBuffers {
                input: mem.slice(input),
                output: &mut *mem.raw_mut(output),
                state: state.map(|s| &mut *mem.raw_mut(s)),
                adapter: adapter.map(|a| mem.slice(a)),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::tests::fake_pool;

    fn range(addr: u64, len: u64) -> uapi::HwRange {
        uapi::HwRange { addr, len }
    }

    fn job(mem: &NpuMemory, input: uapi::HwRange, output: uapi::HwRange, state: uapi::HwRange) -> HwJob<'_> {
        let raw = uapi::HwJob { id: 9, op: uapi::JOB_OP_GENERATE, input, output, state, ..Default::default() };
        HwJob { raw, queue: 0, tag: 0, mem }
    }

    #[test]
    fn buffers_are_the_job_ranges() {
        let (_fd, mem) = fake_pool();
        let mut j = job(&mem, range(100, 10), range(8192, 16), range(16384, 8));
        assert_eq!(j.op(), Some(Op::Generate));
        let b = j.buffers().unwrap();
        assert_eq!(b.input.len(), 10);
        assert_eq!(b.input[0], 100);
        b.output.fill(0xee);
        b.state.unwrap()[0] = 1;
        assert!(b.adapter.is_none());
        assert!(mem.read(range(8192, 16)).unwrap().iter().all(|&x| x == 0xee));
        assert_eq!(mem.read(range(16384, 1)).unwrap()[0], 1);
    }

    #[test]
    fn refused_fetches_are_reported_with_their_slot() {
        // A memfd has no uring_cmd: every FETCH fails with EOPNOTSUPP.
        let (fd, mem) = fake_pool();
        let info = uapi::HwInfo { max_queues: 16, queue_depth: 64, ..Default::default() };
        let dev = HwDevice { mem, info, fd: fd.into_file().into() };
        match dev.queue(3, 4) {
            Err(Error::HwCommand { op: FETCH, queue: 3, tag: 0, source: Errno::EOPNOTSUPP }) => {}
            other => panic!("{:?}", other.map(|q| q.held())),
        }
        for (id, depth) in [(16, 1), (0, 0), (0, 65)] {
            assert!(matches!(dev.queue(id, depth), Err(Error::HwCommand { source: Errno::EINVAL, .. })));
        }
    }

    #[test]
    fn bad_ranges_are_refused() {
        let (_fd, mem) = fake_pool();
        let cases = [
            (job(&mem, range(0, 10), range(4096, 16), range(0, 0)), "read-only"),
            (job(&mem, range(0, 10), range(60_000, 8000), range(0, 0)), "outside"),
            (job(&mem, range(8192, 10), range(8200, 16), range(0, 0)), "output range overlaps the input"),
            (job(&mem, range(0, 10), range(8192, 16), range(8200, 8)), "output range overlaps the state"),
            (job(&mem, range(20_000, 10), range(8192, 16), range(20_008, 8)), "state range overlaps the input"),
        ];
        for (mut j, why) in cases {
            let e = j.buffers().unwrap_err().to_string();
            assert!(e.contains(why), "{why}: {e}");
        }
        // Reading needs no more than the pool.
        assert!(job(&mem, range(0, 10), range(0, 0), range(0, 0)).input().is_ok());
    }
}
