//! Jobs as `async fn`s on tokio: many in flight from one task.
//!
//! ```no_run
//! use m4npu::{Device, JobDesc, Op};
//! tokio_uring::start(async {
//!     let dev = Device::open()?;
//!     let (input, output) = (dev.alloc(8192)?, dev.alloc(8192)?);
//!     let ring = dev.async_ring(64)?;
//!     let a = JobDesc::new(Op::Echo).input(&input, 0, 4096).output(&output, 0, 4096);
//!     let b = JobDesc::new(Op::Echo).input(&input, 4096, 4096).output(&output, 4096, 4096);
//!     // Both jobs are in flight at once, from this one task.
//!     let (na, nb) = tokio::join!(ring.run(&a), ring.run(&b));
//!     assert_eq!((na?, nb?), (4096, 4096));
//!     Ok::<(), m4npu::Error>(())
//! })?;
//! # Ok::<(), m4npu::Error>(())
//! ```
//!
//! Why a ring of its own: a job is an `IORING_OP_URING_CMD` whose 80-byte
//! descriptor needs 128-byte SQEs ([`crate::uring`]), while tokio-uring's
//! ring has 64-byte SQEs and no such op. So [`AsyncRing`] owns an SQE128
//! ring, as [`Ring`](crate::uring::Ring) does, and has the kernel signal an
//! eventfd at every completion, which tokio's reactor watches
//! ([`AsyncFd`]). That works on any tokio runtime with I/O enabled: inside
//! `tokio_uring::start` (a current-thread tokio runtime underneath) as on
//! a plain one.
//!
//! Completions are reaped by whichever job future is polled. The reactor
//! wakes only the last task that polled the eventfd, so each waiting
//! future also keeps its waker in its job's slot: the woken one reaps
//! every CQE and wakes the futures whose jobs completed, and a future that
//! finishes or is dropped wakes another waiting one to watch in its place.
//!
//! Dropping a job's future does not cancel the job: the kernel owns it
//! (and keeps its buffers alive), and its slot stays reserved until its
//! completion has been reaped.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use io_uring::{squeue, IoUring};
use m4npu_uapi as uapi;
use nix::errno::Errno;
use nix::libc;
use nix::sys::eventfd::{EfdFlags, EventFd};
use tokio::io::unix::AsyncFd;

use crate::sys::ring::{watch_eventfd, CmdRing, Sqe};
use crate::uring::{payload, Completion};
use crate::{Device, Error, JobDesc, Result};

mod slots;
use slots::Slots;

/// An io_uring for the jobs of one [`Device`] (context), driven by tokio.
///
/// It lives on the thread of the tasks that use it (it is not `Sync`; its
/// job futures are not `Send`): share it by reference within a task, or
/// through an `Rc` with tasks spawned on the same thread
/// (`tokio_uring::spawn`, `tokio::task::spawn_local`).
///
/// Dropping the ring (which no job future can outlive) closes it, and the
/// kernel cancels what is still in flight, as for [`Ring`](crate::uring::Ring).
///
/// ```no_run
/// use m4npu::{Device, JobDesc, Op};
/// tokio_uring::start(async {
///     let dev = Device::open()?;
///     let (input, output) = (dev.alloc(4096)?, dev.alloc(4096)?);
///     let ring = dev.async_ring(16)?;
///     let n = ring.run(&JobDesc::new(Op::Embed).input(&input, 0, 512).output(&output, 0, 512)).await?;
///     println!("{n} output bytes");
///     Ok::<(), m4npu::Error>(())
/// })?;
/// # Ok::<(), m4npu::Error>(())
/// ```
pub struct AsyncRing<'d> {
    dev: &'d Device,
    // Declared (so dropped) before the eventfd, which the kernel holds a
    // reference to anyway.
    ring: RefCell<CmdRing>,
    event: AsyncFd<EventFd>,
    slots: RefCell<Slots>,
}

impl<'d> AsyncRing<'d> {
    /// A ring of `entries` submission slots; as many jobs as its completion
    /// queue holds (twice that) may be in flight, and more wait for room.
    /// (The driver allows `ctx_max_jobs` per context: past that, jobs fail
    /// with [`Error::TooManyJobs`].)
    ///
    /// Must be called within a tokio runtime with I/O enabled, such as
    /// `tokio_uring::start`; outside any runtime it fails.
    ///
    /// ```no_run
    /// tokio_uring::start(async {
    ///     let dev = m4npu::Device::open()?;
    ///     let ring = m4npu::aio::AsyncRing::new(&dev, 32)?;
    ///     assert_eq!(ring.capacity(), 64);
    ///     Ok::<(), m4npu::Error>(())
    /// })?;
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub fn new(dev: &'d Device, entries: u32) -> Result<Self> {
        if tokio::runtime::Handle::try_current().is_err() {
            let source = std::io::Error::other("an AsyncRing needs a tokio runtime with I/O (e.g. tokio_uring::start)");
            return Err(Error::Io { what: "creating the async job ring", source });
        }
        let io = |what| move |source| Error::Io { what, source };
        // SUBMIT_ALL: a command the kernel refuses at submission does not
        // hold back the ones queued after it.
        let ring = IoUring::<squeue::Entry128>::builder()
            .setup_submit_all()
            .build(entries)
            .map_err(io("creating the job io_uring (SQE128)"))?;
        let efd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|e| io("creating the job ring's eventfd")(e.into()))?;
        let ring = CmdRing::new(ring);
        ring.register_eventfd(efd.as_raw_fd()).map_err(io("registering the job ring's eventfd"))?;
        let event = watch_eventfd(efd).map_err(io("watching the job ring's eventfd"))?;
        let slots = Slots::new(ring.cq_entries() as usize);
        Ok(Self { dev, ring: RefCell::new(ring), event, slots: RefCell::new(slots) })
    }

    /// How many jobs may be in flight at once.
    ///
    /// ```no_run
    /// # tokio_uring::start(async {
    /// let dev = m4npu::Device::open()?;
    /// assert_eq!(dev.async_ring(8)?.capacity(), 16);
    /// # Ok::<(), m4npu::Error>(()) })?;
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub fn capacity(&self) -> usize {
        self.slots.borrow().capacity()
    }

    /// Jobs holding a slot: submitted and not yet returned by their future,
    /// including those whose future was dropped and whose completion has
    /// not been reaped yet.
    ///
    /// ```no_run
    /// # tokio_uring::start(async {
    /// let dev = m4npu::Device::open()?;
    /// let ring = dev.async_ring(8)?;
    /// assert_eq!(ring.in_flight(), 0);
    /// # Ok::<(), m4npu::Error>(()) })?;
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub fn in_flight(&self) -> usize {
        self.slots.borrow().in_use()
    }

    /// Runs `job` and returns the number of output bytes, with the errors
    /// of [`Device::run`]. Any number of these futures may be in flight
    /// from one task (`tokio::join!`, or tasks on the same thread); past
    /// [`AsyncRing::capacity`] they wait for room.
    ///
    /// Cancellation: dropping the future before it completes leaves the
    /// job to run: the kernel owns it (and keeps its buffers alive), so its
    /// slot stays reserved until its completion arrives and is then freed.
    /// Its output is written all the same.
    ///
    /// ```no_run
    /// use m4npu::{Device, JobDesc, Op};
    /// tokio_uring::start(async {
    ///     let dev = Device::open()?;
    ///     let mut input = dev.alloc(4096)?;
    ///     input.as_mut_slice()[..5].copy_from_slice(b"hello");
    ///     let output = dev.alloc(4096)?;
    ///     let ring = dev.async_ring(8)?;
    ///     let n = ring.run(&JobDesc::new(Op::Echo).input(&input, 0, 5).output(&output, 0, 4096)).await?;
    ///     assert_eq!(&output.as_slice()[..n], b"hello");
    ///     Ok::<(), m4npu::Error>(())
    /// })?;
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub async fn run(&self, job: &JobDesc<'_>) -> Result<usize> {
        job.check_for(self.dev)?;
        self.run_raw(job.as_raw()).await
    }

    /// As [`AsyncRing::run`], for a raw descriptor the library does not
    /// check (the driver does): for tools and tests of the driver.
    ///
    /// ```no_run
    /// # tokio_uring::start(async {
    /// let dev = m4npu::Device::open()?;
    /// let ring = dev.async_ring(8)?;
    /// let r = ring.run_raw(&m4npu::uapi::Job::default()).await;
    /// assert_eq!(r.unwrap_err().errno(), Some(m4npu::Errno::EOPNOTSUPP));
    /// # Ok::<(), m4npu::Error>(()) })?;
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub async fn run_raw(&self, job: &uapi::Job) -> Result<usize> {
        let mut ticket = Reserve { ring: self, waiting: false }.await?;
        self.push(&mut ticket, self.command(job))?;
        // Its first poll submits it.
        ticket.await
    }

    /// Runs every job in `jobs` and returns their results in that order.
    /// The jobs go to the driver together (one `io_uring_enter` for as
    /// many as the submission queue holds); past the ring's capacity the
    /// oldest results are taken to make room. Jobs the library refuses get
    /// their error without being submitted.
    ///
    /// ```no_run
    /// use m4npu::{Device, JobDesc, Op};
    /// tokio_uring::start(async {
    ///     let dev = Device::open()?;
    ///     let (input, output) = (dev.alloc(64 * 1024)?, dev.alloc(64 * 1024)?);
    ///     let ring = dev.async_ring(16)?;
    ///     let jobs: Vec<_> = (0..64)
    ///         .map(|i| JobDesc::new(Op::Echo).input(&input, i * 1024, 1024).output(&output, i * 1024, 1024))
    ///         .collect();
    ///     for (i, r) in ring.run_all(&jobs).await.into_iter().enumerate() {
    ///         println!("job {i}: {} output bytes", r?);
    ///     }
    ///     Ok::<(), m4npu::Error>(())
    /// })?;
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub async fn run_all(&self, jobs: &[JobDesc<'_>]) -> Vec<Result<usize>> {
        self.run_batch(jobs.iter().map(|job| {
            job.check_for(self.dev)?;
            Ok(self.command(job.as_raw()))
        }))
        .await
    }

    async fn run_batch(&self, sqes: impl IntoIterator<Item = Result<Sqe<squeue::Entry128>>>) -> Vec<Result<usize>> {
        let mut results: Vec<Option<Result<usize>>> = Vec::new();
        let mut queued: VecDeque<(usize, Ticket<'_, 'd>)> = VecDeque::new();
        for (i, sqe) in sqes.into_iter().enumerate() {
            results.push(None);
            let sqe = match sqe {
                Ok(sqe) => sqe,
                Err(e) => {
                    results[i] = Some(Err(e));
                    continue;
                }
            };
            let ticket = loop {
                if let Some(idx) = self.slots.borrow_mut().reserve() {
                    break Ok(Ticket { ring: self, idx, state: TicketState::Reserved });
                }
                match queued.pop_front() {
                    // Awaiting submits the batch so far; the result frees a slot.
                    Some((j, t)) => results[j] = Some(t.await),
                    // Every slot is another future's: wait for one.
                    None => break Reserve { ring: self, waiting: false }.await,
                }
            };
            match ticket.and_then(|mut t| self.push(&mut t, sqe).map(|()| t)) {
                Ok(t) => queued.push_back((i, t)),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        for (j, t) in queued {
            results[j] = Some(t.await);
        }
        results.into_iter().map(|r| r.expect("every job has its result")).collect()
    }

    fn command(&self, job: &uapi::Job) -> Sqe<squeue::Entry128> {
        Sqe::device_cmd(self.dev, uapi::URING_CMD_RUN, payload(job))
    }

    /// Queues the ticket's SQE, making room in a full submission queue.
    fn push(&self, ticket: &mut Ticket<'_, 'd>, sqe: Sqe<squeue::Entry128>) -> Result<()> {
        let sqe = sqe.user_data(ticket.idx as u64);
        for _ in 0..2 {
            if self.ring.borrow_mut().push(&sqe) {
                // From here the kernel may own the job: a dropped ticket orphans it.
                ticket.state = TicketState::Pushed;
                return Ok(());
            }
            self.submit()?;
        }
        let source = std::io::Error::from_raw_os_error(libc::EAGAIN);
        Err(Error::Io { what: "io_uring submission queue stays full", source })
    }

    /// `io_uring_enter` for what is queued. When the kernel takes nothing
    /// for now (`EAGAIN`, `EBUSY`) the SQEs stay queued for the next call.
    fn submit(&self) -> Result<()> {
        self.ring.borrow().enter(0, None).map_err(|source| Error::Io { what: "io_uring_enter", source })
    }

    /// Submits what is queued, reaps every completion, and leaves the task
    /// of `cx` to be woken by the next one.
    fn progress(&self, cx: &mut Context<'_>) -> Result<()> {
        if self.ring.borrow_mut().queued() > 0 {
            self.submit()?;
            if self.ring.borrow_mut().queued() > 0 {
                // Nothing will signal the retry: poll again soon.
                cx.waker().wake_by_ref();
            }
        }
        loop {
            self.reap();
            // Pending registers cx's waker: a completion posted after the
            // reap above signals the eventfd and so wakes it.
            let mut ready = match self.event.poll_read_ready(cx) {
                Poll::Pending => return Ok(()),
                Poll::Ready(Ok(ready)) => ready,
                Poll::Ready(Err(source)) => return Err(Error::Io { what: "waiting for job completions", source }),
            };
            // Zero the counter, then clear tokio's readiness (which a signal
            // newer than this guard keeps set); the loop reaps again, so a
            // completion posted before the clear is not left behind.
            match ready.get_inner().read() {
                Ok(_) | Err(Errno::EAGAIN) => ready.clear_ready(),
                Err(Errno::EINTR) => {}
                Err(e) => return Err(Error::Io { what: "reading the job ring's eventfd", source: e.into() }),
            }
        }
    }

    /// Takes every CQE into its slot and wakes the futures it completes.
    fn reap(&self) {
        let mut wake = Vec::new();
        {
            let mut ring = self.ring.borrow_mut();
            let mut slots = self.slots.borrow_mut();
            for c in ring.reap() {
                slots.complete(c.user_data, c.res, &mut wake);
            }
        }
        wake.into_iter().for_each(Waker::wake);
    }

    /// A future that may have been the one the reactor wakes is leaving:
    /// wake a waiting one, which takes over when polled.
    fn hand_off(&self) {
        let waiter = self.slots.borrow().any_waiter();
        if let Some(w) = waiter {
            w.wake();
        }
    }

    /// Frees or orphans a ticket's slot (see [`Slots::abandon`]).
    fn abandon(&self, idx: usize, pushed: bool) {
        let mut wake = Vec::new();
        self.slots.borrow_mut().abandon(idx, pushed, &mut wake);
        wake.into_iter().for_each(Waker::wake);
        self.hand_off();
    }
}

/// Waits for a free slot.
struct Reserve<'r, 'd> {
    ring: &'r AsyncRing<'d>,
    /// Pending: possibly the future the reactor wakes.
    waiting: bool,
}

impl<'r, 'd> Future for Reserve<'r, 'd> {
    type Output = Result<Ticket<'r, 'd>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let ring = self.ring;
        // Reaping may free slots (of dropped futures); nobody else may be
        // polling to do it.
        ring.progress(cx)?;
        let mut slots = ring.slots.borrow_mut();
        match slots.reserve() {
            Some(idx) => {
                self.waiting = false;
                Poll::Ready(Ok(Ticket { ring, idx, state: TicketState::Reserved }))
            }
            None => {
                slots.wait_for_room(cx.waker());
                self.waiting = true;
                Poll::Pending
            }
        }
    }
}

impl Drop for Reserve<'_, '_> {
    fn drop(&mut self) {
        if self.waiting {
            self.ring.hand_off();
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TicketState {
    Reserved,
    Pushed,
    Finished,
}

/// A reserved slot and, once pushed, the job in it: awaiting it (after the
/// push) gives the job's result.
struct Ticket<'r, 'd> {
    ring: &'r AsyncRing<'d>,
    idx: usize,
    state: TicketState,
}

impl Future for Ticket<'_, '_> {
    type Output = Result<usize>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<usize>> {
        debug_assert_eq!(self.state, TicketState::Pushed);
        let ring = self.ring;
        ring.progress(cx)?;
        let mut wake = Vec::new();
        let polled = ring.slots.borrow_mut().poll(self.idx, cx.waker(), &mut wake);
        wake.into_iter().for_each(Waker::wake);
        let Poll::Ready(res) = polled else { return Poll::Pending };
        self.state = TicketState::Finished;
        ring.hand_off();
        Poll::Ready(Completion { user_data: self.idx as u64, res }.result())
    }
}

impl Drop for Ticket<'_, '_> {
    fn drop(&mut self) {
        if self.state != TicketState::Finished {
            self.ring.abandon(self.idx, self.state == TicketState::Pushed);
        }
    }
}

#[cfg(test)]
mod tests;
