//! A device queue that takes and returns jobs in batches (after ublk's
//! `BATCH_IO`): one FETCH_BATCH outstanding brings every job waiting in the
//! driver at once, up to the queue's depth, and the results of all the jobs
//! finished since go back in one COMMIT_BATCH.

use std::cell::UnsafeCell;
use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, RawFd};

use io_uring::{squeue, IoUring};
use m4npu::ring_core::{CmdRing, Sqe};
use m4npu::uring::Completion;
use m4npu::{Error, Result};
use m4npu_uapi as uapi;
use nix::errno::Errno;

use crate::sys::batch_cmd_bytes;
use crate::{HwDevice, HwJob};

const FETCH: &str = "HW_FETCH_BATCH";
const COMMIT: &str = "HW_COMMIT_BATCH";
/// `user_data` of the FETCH_BATCH; commits count up from 1.
const FETCH_ID: u64 = 0;

/// Queue `id` of the device, served in batches: [`HwBatchQueue::fetch`]
/// returns every job the driver had for it (up to `depth` held at once),
/// and the results of [`HwBatchQueue::commit`] go back together with the
/// next fetch or [`HwBatchQueue::flush`]. Create it on the thread that
/// serves it, as [`crate::HwQueue`].
///
/// ```no_run
/// # fn serve(dev: &m4npu_hw::HwDevice) -> m4npu::Result<()> {
/// let mut queue = dev.batch_queue(0, 32)?;
/// loop {
///     for job in queue.fetch()? {
///         queue.commit(job, Err(m4npu::Errno::ENOSYS))?;
///     }
/// }
/// # }
/// ```
pub struct HwBatchQueue<'m> {
    // Dropped first: the ring's file goes before the buffers it uses.
    ring: CmdRing<squeue::Entry>,
    dev: &'m HwDevice,
    id: u16,
    depth: u16,
    /// Where the driver writes fetched jobs while the FETCH_BATCH is out.
    entries: Box<[UnsafeCell<uapi::HwBatchJob>]>,
    fetching: bool,
    held: usize,
    /// Results waiting for the next COMMIT_BATCH.
    results: Vec<uapi::HwBatchResult>,
    /// COMMIT_BATCH entries in flight, kept until their completion.
    commits: HashMap<u64, Vec<uapi::HwBatchResult>>,
    next_commit: u64,
    ready: Vec<HwJob<'m>>,
    failed: VecDeque<Error>,
}

impl<'m> HwBatchQueue<'m> {
    pub(crate) fn new(dev: &'m HwDevice, id: u16, depth: u16) -> Result<Self> {
        let info = dev.info();
        if id >= info.max_queues || depth == 0 || depth > info.queue_depth {
            return Err(Error::HwCommand { op: FETCH, queue: id, tag: depth, source: Errno::EINVAL });
        }
        // A fetch and a commit per held job at most: the ring never fills.
        let ring = IoUring::new((2 * u32::from(depth)).next_power_of_two())
            .map_err(|source| Error::Io { what: "creating the device queue's io_uring", source })?;
        let mut q = Self {
            ring: CmdRing::new(ring),
            dev,
            id,
            depth,
            entries: (0..depth).map(|_| UnsafeCell::new(uapi::HwBatchJob::default())).collect(),
            fetching: false,
            held: 0,
            results: Vec::new(),
            commits: HashMap::new(),
            next_commit: 1,
            ready: Vec::new(),
            failed: VecDeque::new(),
        };
        q.rearm()?;
        // The driver refuses a bad queue or a second FETCH_BATCH at once.
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

    /// Jobs received and not yet committed.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Sends the pending results, waits for jobs and returns all at hand.
    /// A failed command is reported first (the jobs received meanwhile come
    /// with the next call); a failed FETCH_BATCH is sent again next time.
    pub fn fetch(&mut self) -> Result<Vec<HwJob<'m>>> {
        self.collect(true)
    }

    /// As [`HwBatchQueue::fetch`], without waiting.
    pub fn try_fetch(&mut self) -> Result<Vec<HwJob<'m>>> {
        self.collect(false)
    }

    fn collect(&mut self, wait: bool) -> Result<Vec<HwJob<'m>>> {
        self.queue_commits()?;
        self.rearm()?;
        self.enter(0)?;
        while wait && self.ready.is_empty() && self.failed.is_empty() && self.fetching {
            self.enter(1)?;
        }
        if let Some(e) = self.failed.pop_front() {
            return Err(e);
        }
        Ok(std::mem::take(&mut self.ready))
    }

    /// Records `job`'s result (`Ok(n)` output bytes, or an errno for the
    /// app), sent with the next fetch or flush.
    pub fn commit(&mut self, job: HwJob<'m>, result: std::result::Result<usize, Errno>) -> Result<()> {
        self.commit_raw(job, crate::result_code(result))
    }

    /// As [`HwBatchQueue::commit`] with the raw result, checked by the
    /// driver only (for tests of the driver).
    pub fn commit_raw(&mut self, job: HwJob<'m>, result: i32) -> Result<()> {
        if job.queue != self.id {
            return Err(Error::HwCommand { op: COMMIT, queue: job.queue, tag: job.tag, source: Errno::EINVAL });
        }
        self.results.push(uapi::HwBatchResult { tag: job.tag, pad: 0, result });
        self.held -= 1;
        Ok(())
    }

    /// Sends the pending results (and the FETCH_BATCH, if it is not out)
    /// without waiting; a poll on the queue's fd then wakes for new jobs.
    pub fn flush(&mut self) -> Result<()> {
        self.queue_commits()?;
        self.rearm()?;
        crate::enter_ring(&self.ring, 0)
    }

    fn rearm(&mut self) -> Result<()> {
        if self.fetching {
            return Ok(());
        }
        let room = self.depth - self.held as u16;
        if room == 0 {
            return Ok(());
        }
        let cmd = uapi::HwBatchCmd { queue: self.id, count: room, pad: 0, addr: self.entries.as_ptr() as u64 };
        // The driver writes up to `room` entries at `addr`, the queue's
        // entry cells, which outlive the command (see Drop).
        self.push(uapi::URING_CMD_HW_FETCH_BATCH, &cmd, FETCH_ID)?;
        self.fetching = true;
        Ok(())
    }

    fn queue_commits(&mut self) -> Result<()> {
        // At most a queue's depth of entries per command.
        while !self.results.is_empty() {
            let n = self.results.len().min(usize::from(self.depth));
            let batch: Vec<_> = self.results.drain(..n).collect();
            let id = self.next_commit;
            self.next_commit += 1;
            let cmd = uapi::HwBatchCmd { queue: self.id, count: n as u16, pad: 0, addr: batch.as_ptr() as u64 };
            // The driver reads the entries as it takes the command; they
            // stay until its completion all the same (see Drop).
            self.commits.insert(id, batch);
            self.push(uapi::URING_CMD_HW_COMMIT_BATCH, &cmd, id)?;
        }
        Ok(())
    }

    fn push(&mut self, cmd_op: u32, cmd: &uapi::HwBatchCmd, user_data: u64) -> Result<()> {
        // SAFETY: the command's buffer outlives it (callers, and Drop).
        let sqe = unsafe { Sqe::uring_cmd(self.dev.as_raw_fd(), cmd_op, batch_cmd_bytes(cmd)) }.user_data(user_data);
        while !self.ring.push(&sqe) {
            self.enter(0)?;
        }
        Ok(())
    }

    /// `io_uring_enter`: submits, waits for `want` completions, takes them.
    fn enter(&mut self, want: usize) -> Result<()> {
        crate::enter_ring(&self.ring, want)?;
        let done: Vec<_> = self.ring.reap().collect();
        for Completion { user_data, res } in done {
            if user_data == FETCH_ID {
                self.fetching = false;
                if res < 0 {
                    let source = Errno::from_raw(-res);
                    self.failed.push_back(Error::HwCommand { op: FETCH, queue: self.id, tag: 0, source });
                    continue;
                }
                let n = (res as usize).min(self.entries.len());
                for cell in &self.entries[..n] {
                    // SAFETY: the driver wrote the entries before completing
                    // the command, and no FETCH_BATCH is outstanding now.
                    let e = unsafe { std::ptr::read_volatile(cell.get()) };
                    self.ready.push(HwJob { raw: e.job, queue: self.id, tag: e.tag, mem: &self.dev.mem });
                }
                self.held += n;
            } else if self.commits.remove(&user_data).is_some() && res < 0 {
                let source = Errno::from_raw(-res);
                self.failed.push_back(Error::HwCommand { op: COMMIT, queue: self.id, tag: 0, source });
            }
        }
        Ok(())
    }
}

impl Drop for HwBatchQueue<'_> {
    fn drop(&mut self) {
        // A command may still be outstanding when the ring goes: the driver
        // could write (or read) its buffer after we are gone. Keep them.
        if self.fetching {
            std::mem::forget(std::mem::take(&mut self.entries));
        }
        if !self.commits.is_empty() {
            std::mem::forget(std::mem::take(&mut self.commits));
        }
    }
}

impl AsRawFd for HwBatchQueue<'_> {
    /// The queue's io_uring: readable when jobs or failures arrive.
    fn as_raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}
