//! Jobs over io_uring: many in flight from one thread, completions reaped
//! in batches.
//!
//! Each job is an `IORING_OP_URING_CMD` on the `/dev/m4npu` file whose
//! 80-byte descriptor travels in the SQE itself, so the ring is set up with
//! 128-byte SQEs and a submitted job points at no memory of the app's.
//! Nothing is registered with the ring. Buffers need no registration: a
//! job names BOs the driver already holds. Registering the device file
//! would save a file lookup per job (noise next to a job's cost) but would
//! make the ring hold the file until io_uring's asynchronous teardown: a
//! closed context, and the module, would stay busy for a while after the
//! app let go (the guest suite's rmmod saw `EAGAIN`).
//!
//! ```no_run
//! use m4npu::{uring::Ring, Device, JobDesc, Op};
//! let dev = Device::open()?;
//! let input = dev.alloc(64 * 1024)?;
//! let output = dev.alloc(64 * 1024)?;
//! let mut ring = Ring::new(&dev, 64)?;
//! for i in 0..64 {
//!     let job = JobDesc::new(Op::Embed).input(&input, i * 1024, 1024).output(&output, i * 1024, 1024);
//!     ring.push(&job, i as u64)?;
//! }
//! for c in ring.wait(64)? {
//!     println!("job {}: {} output bytes", c.user_data, c.result()?);
//! }
//! # Ok::<(), m4npu::Error>(())
//! ```

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use io_uring::{squeue, IoUring};
use m4npu_uapi as uapi;
use nix::errno::Errno;

use crate::error::job_error;
use crate::sys::ring::{CmdRing, Sqe};
use crate::{Device, Error, JobDesc, Result};

bitflags::bitflags! {
    /// How a job ring is set up, beyond `IORING_SETUP_SQE128`: the set-ups
    /// apps use ([`Ring::with_setup`]), each with the driver.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct RingSetup: u32 {
        /// `IORING_SETUP_COOP_TASKRUN`: no interrupting IPI for completions.
        const COOP_TASKRUN = 1 << 0;
        /// `IORING_SETUP_SINGLE_ISSUER`: one task submits.
        const SINGLE_ISSUER = 1 << 1;
        /// `IORING_SETUP_DEFER_TASKRUN` (with SINGLE_ISSUER; liburing's
        /// recommended set-up): completions run when the app waits.
        const DEFER_TASKRUN = 1 << 2;
        /// `IORING_SETUP_SQPOLL`: a kernel thread submits.
        const SQPOLL = 1 << 3;
    }
}

/// A finished job: its submitter's tag and the CQE's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The `user_data` given to [`Ring::push`].
    pub user_data: u64,
    /// The CQE's `res`: output bytes, or `-errno`.
    pub res: i32,
}

impl Completion {
    /// The output bytes, or the job's error.
    ///
    /// ```
    /// use m4npu::{uring::Completion, Errno, Error};
    /// assert_eq!(Completion { user_data: 1, res: 1536 }.result()?, 1536);
    /// let refused = Completion { user_data: 2, res: -(Errno::EBUSY as i32) };
    /// assert!(matches!(refused.result(), Err(Error::TooManyJobs)));
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub fn result(&self) -> Result<usize> {
        if self.res >= 0 {
            Ok(self.res as usize)
        } else {
            Err(job_error(Errno::from_raw(-self.res)))
        }
    }
}

/// An io_uring for the jobs of one [`Device`] (context).
///
/// Dropping the ring cancels what is still in flight: jobs not yet at the
/// device are dropped, the others run to completion unannounced.
///
/// Jobs go in with [`Ring::push`], to the driver with [`Ring::submit`] (or
/// any wait), and come back as [`Completion`]s from [`Ring::wait`]; see the
/// [module](self) and `examples/uring_batch.rs`.
pub struct Ring<'d> {
    dev: &'d Device,
    ring: CmdRing,
    /// Pushed and not yet seen in the completion queue.
    outstanding: usize,
    /// Taken from the completion queue and not yet returned.
    done: VecDeque<Completion>,
}

/// The descriptor as the SQE's command area carries it.
///
/// ```
/// use m4npu::{uring::payload, JobDesc, Op};
/// let bytes = payload(JobDesc::new(Op::Echo).as_raw());
/// assert_eq!(bytes.len(), m4npu::uapi::URING_CMD_SQE128_BYTES);
/// ```
pub fn payload(job: &uapi::Job) -> [u8; uapi::URING_CMD_SQE128_BYTES] {
    crate::sys::job_bytes(job)
}

impl<'d> Ring<'d> {
    /// A ring of `entries` submission slots (the completion queue holds
    /// twice as many, which bounds the jobs in flight).
    ///
    /// ```no_run
    /// let dev = m4npu::Device::open()?;
    /// let ring = m4npu::uring::Ring::new(&dev, 64)?;
    /// assert_eq!(ring.pending(), 0);
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub fn new(dev: &'d Device, entries: u32) -> Result<Self> {
        Self::with_setup(dev, entries, RingSetup::empty())
    }

    /// [`Ring::new`] with a set-up of [`RingSetup`] flags.
    ///
    /// ```no_run
    /// use m4npu::uring::{Ring, RingSetup};
    /// let dev = m4npu::Device::open()?;
    /// let ring = Ring::with_setup(&dev, 64, RingSetup::SINGLE_ISSUER | RingSetup::DEFER_TASKRUN)?;
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub fn with_setup(dev: &'d Device, entries: u32, setup: RingSetup) -> Result<Self> {
        let mut b = IoUring::<squeue::Entry128>::builder();
        if setup.contains(RingSetup::COOP_TASKRUN) {
            b.setup_coop_taskrun();
        }
        if setup.contains(RingSetup::SINGLE_ISSUER) {
            b.setup_single_issuer();
        }
        if setup.contains(RingSetup::DEFER_TASKRUN) {
            b.setup_defer_taskrun();
        }
        if setup.contains(RingSetup::SQPOLL) {
            b.setup_sqpoll(1000);
        }
        let ring = b.build(entries).map_err(|source| Error::Io { what: "creating the job io_uring (SQE128)", source })?;
        Ok(Self { dev, ring: CmdRing::new(ring), outstanding: 0, done: VecDeque::new() })
    }

    /// Jobs pushed and not yet returned by [`Ring::wait`].
    ///
    /// ```no_run
    /// # fn f(ring: &mut m4npu::uring::Ring<'_>) -> m4npu::Result<()> {
    /// while ring.pending() > 0 {
    ///     for c in ring.wait(1)? {
    ///         println!("job {}: {:?}", c.user_data, c.result());
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn pending(&self) -> usize {
        self.outstanding + self.done.len()
    }

    /// Queues `job`, tagged with `user_data` for its [`Completion`]. It
    /// goes to the driver with the next [`Ring::submit`] or wait, or at
    /// once when the submission queue is full. Blocks (reaping into the
    /// ring's own list) while the completion queue could not take one more.
    ///
    /// ```no_run
    /// use m4npu::{Device, JobDesc, Op};
    /// let dev = Device::open()?;
    /// let (input, output) = (dev.alloc(4096)?, dev.alloc(4096)?);
    /// let mut ring = dev.ring(8)?;
    /// ring.push(&JobDesc::new(Op::Echo).input(&input, 0, 4096).output(&output, 0, 4096), 42)?;
    /// let done = ring.wait(1)?;
    /// assert_eq!(done[0].user_data, 42);
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub fn push(&mut self, job: &JobDesc<'_>, user_data: u64) -> Result<()> {
        job.check_for(self.dev)?;
        self.push_raw(job.as_raw(), user_data)
    }

    /// As [`Ring::push`], for a raw descriptor the library does not check.
    ///
    /// ```no_run
    /// let dev = m4npu::Device::open()?;
    /// let mut ring = dev.ring(8)?;
    /// ring.push_raw(&m4npu::uapi::Job::default(), 1)?;
    /// let r = ring.wait(1)?[0].result();
    /// assert_eq!(r.unwrap_err().errno(), Some(m4npu::Errno::EOPNOTSUPP));
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub fn push_raw(&mut self, job: &uapi::Job, user_data: u64) -> Result<()> {
        self.push_cmd(uapi::URING_CMD_RUN, payload(job), user_data)
    }

    /// Queues any uring command on the device file (for tests of the driver).
    ///
    /// ```no_run
    /// let dev = m4npu::Device::open()?;
    /// let mut ring = dev.ring(8)?;
    /// ring.push_cmd(0xdead, [0; 80], 1)?; // a command the driver does not know
    /// println!("{:?}", ring.wait(1)?[0].result());
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub fn push_cmd(&mut self, cmd_op: u32, payload: [u8; 80], user_data: u64) -> Result<()> {
        self.push_sqe(Sqe::device_cmd(self.dev, cmd_op, payload).user_data(user_data))
    }

    /// Queues an `IORING_OP_NOP`: the ring's own cost, the yardstick the
    /// driver's per-job cost is measured against.
    ///
    /// ```no_run
    /// let dev = m4npu::Device::open()?;
    /// let mut ring = dev.ring(8)?;
    /// ring.push_nop(7)?;
    /// assert_eq!(ring.wait(1)?[0].res, 0);
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub fn push_nop(&mut self, user_data: u64) -> Result<()> {
        self.push_sqe(Sqe::nop().user_data(user_data))
    }

    /// Queues `sqe` once the completion queue has room for one more.
    fn push_sqe(&mut self, sqe: Sqe<squeue::Entry128>) -> Result<()> {
        while self.outstanding >= self.ring.cq_entries() as usize {
            self.enter(1, None)?;
        }
        while !self.ring.push(&sqe) {
            self.enter(0, None)?;
        }
        self.outstanding += 1;
        Ok(())
    }

    /// Hands every queued job to the driver without waiting (and without
    /// taking completions, so a poll on the ring's fd wakes for them).
    ///
    /// ```no_run
    /// # fn f(ring: &mut m4npu::uring::Ring<'_>, jobs: &[m4npu::JobDesc<'_>]) -> m4npu::Result<()> {
    /// for (i, job) in jobs.iter().enumerate() {
    ///     ring.push(job, i as u64)?;
    /// }
    /// ring.submit()?; // all of them in one io_uring_enter (if the queue held them)
    /// // ... other work while the NPU runs them ...
    /// let done = ring.wait(jobs.len())?;
    /// # Ok(()) }
    /// ```
    pub fn submit(&mut self) -> Result<()> {
        self.ring.enter(0, None).map_err(|source| Error::Io { what: "io_uring_enter", source })
    }

    /// Submits what is queued, waits until at least `min` jobs (at most all
    /// pending ones) have completed, and returns every completion at hand.
    ///
    /// ```no_run
    /// # fn f(ring: &mut m4npu::uring::Ring<'_>) -> m4npu::Result<()> {
    /// // Batches of at least 16 (fewer at the end), in completion order.
    /// while ring.pending() > 0 {
    ///     let batch = ring.wait(16)?;
    ///     println!("{} completions", batch.len());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn wait(&mut self, min: usize) -> Result<Vec<Completion>> {
        self.wait_until(min, None)
    }

    /// As [`Ring::wait`], but returns what has completed after `timeout`
    /// even if that is fewer than `min`.
    ///
    /// ```no_run
    /// # fn f(ring: &mut m4npu::uring::Ring<'_>) -> m4npu::Result<()> {
    /// use std::time::Duration;
    /// let done = ring.wait_timeout(ring.pending(), Duration::from_millis(100))?;
    /// println!("{} done, {} still pending", done.len(), ring.pending());
    /// # Ok(()) }
    /// ```
    pub fn wait_timeout(&mut self, min: usize, timeout: Duration) -> Result<Vec<Completion>> {
        self.wait_until(min, Some(Instant::now() + timeout))
    }

    fn wait_until(&mut self, min: usize, deadline: Option<Instant>) -> Result<Vec<Completion>> {
        let min = min.min(self.pending());
        self.enter(0, None)?;
        while self.done.len() < min {
            let left = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => break,
                },
            };
            self.enter(min - self.done.len(), left)?;
        }
        Ok(self.done.drain(..).collect())
    }

    /// `io_uring_enter`: submits the queue, waits for `want` completions
    /// (at most `timeout`), then moves the completions to `done`.
    fn enter(&mut self, want: usize, timeout: Option<Duration>) -> Result<()> {
        // Short of `want` (a signal, the timeout, a full completion queue):
        // the caller's loop decides what next, after the drain below.
        self.ring.enter(want, timeout).map_err(|source| Error::Io { what: "io_uring_enter", source })?;
        for c in self.ring.reap() {
            // Saturating: a driver posting more completions than it was
            // given jobs must not wreck the bookkeeping of what is pending.
            self.outstanding = self.outstanding.saturating_sub(1);
            self.done.push_back(c);
        }
        Ok(())
    }
}

impl AsRawFd for Ring<'_> {
    /// The ring's own file, readable when completions arrive that no wait
    /// has taken yet. [`Ring::push`] may take some while it waits for room:
    /// call `wait(0)` until it returns none before polling.
    fn as_raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use nix::libc;

    use super::*;

    #[test]
    fn descriptor_bytes_are_the_c_layout() {
        let job = uapi::Job {
            adapter: 0x0403_0201,
            op: uapi::JOB_OP_ECHO,
            priority: uapi::JOB_PRIO_LOW,
            flags: 0,
            input: uapi::BoRange { handle: 7, pad: 0, offset: 0x10, length: 0x20 },
            output: uapi::BoRange { handle: 8, pad: 0, offset: 0x30, length: 0x40 },
            state: uapi::BoRange::default(),
        };
        let b = payload(&job);
        assert_eq!(&b[0..4], &[1, 2, 3, 4]);
        assert_eq!(u16::from_ne_bytes([b[4], b[5]]), uapi::JOB_OP_ECHO);
        assert_eq!((b[6], b[7]), (uapi::JOB_PRIO_LOW, 0));
        assert_eq!(u32::from_ne_bytes(b[8..12].try_into().unwrap()), 7);
        assert_eq!(u64::from_ne_bytes(b[16..24].try_into().unwrap()), 0x10);
        assert_eq!(u64::from_ne_bytes(b[24..32].try_into().unwrap()), 0x20);
        assert_eq!(u32::from_ne_bytes(b[32..36].try_into().unwrap()), 8);
        assert!(b[56..].iter().all(|&x| x == 0));
    }

    /// A file without `uring_cmd` (a memfd; /dev/null has one) stands in
    /// for the driver: every command completes at once with `EOPNOTSUPP`.
    fn null_device() -> Device {
        let fd = memfd::MemfdOptions::default().create("not-an-npu").unwrap();
        Device::from_fd_for_tests(fd.into_file().into())
    }

    #[test]
    fn every_pushed_job_completes_once_through_a_small_ring() {
        let dev = null_device();
        let mut ring = Ring::new(&dev, 4).unwrap();
        let mut seen = vec![0u32; 1000];
        for i in 0..1000u64 {
            ring.push_raw(&uapi::Job::default(), i).unwrap();
            // Backpressure: never more in flight than the CQ holds.
            assert!(ring.outstanding <= ring.ring.cq_entries() as usize);
        }
        assert_eq!(ring.pending(), 1000);
        let done = ring.wait(1000).unwrap();
        assert_eq!(ring.pending(), 0);
        for c in done {
            assert_eq!(c.res, -libc::EOPNOTSUPP);
            assert!(matches!(c.result(), Err(Error::UnsupportedJobOp)));
            seen[c.user_data as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n == 1));
        assert!(ring.wait_timeout(1, Duration::from_millis(1)).unwrap().is_empty());
    }

    #[test]
    fn completions_map_results() {
        assert_eq!(Completion { user_data: 1, res: 4096 }.result().unwrap(), 4096);
        let e = Completion { user_data: 2, res: -libc::ENXIO }.result().unwrap_err();
        assert!(matches!(e, Error::NoNpuDevice), "{e:?}");
        let e = Completion { user_data: 3, res: -libc::EPROTO }.result().unwrap_err();
        assert_eq!(e.errno(), Some(Errno::EPROTO));
    }
}
