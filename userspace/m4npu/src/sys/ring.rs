//! The io_uring core of the three rings: the app's [`Ring`](crate::uring::Ring)
//! and [`AsyncRing`](crate::aio::AsyncRing) (`IORING_OP_URING_CMD` with the
//! job's 80-byte descriptor in an SQE128) and m4npu-hw's device queues
//! (16-byte commands in plain SQEs). Each builds its commands here, pushes
//! them, enters the ring and reaps completions through [`CmdRing`]; what to
//! do about a full queue or a wait that ended short stays the caller's.
//!
//! Public for m4npu-hw, which depends on this crate; not part of the API.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use nix::libc;

use crate::uring::Completion;
use crate::Device;

/// An SQE size and the `URING_CMD` that fills it.
pub trait CmdEntry: squeue::EntryMarker {
    /// The command area: 16 bytes in a plain SQE, 80 in an SQE128.
    type Cmd;
    fn uring_cmd(fd: RawFd, op: u32, cmd: Self::Cmd) -> Self;
}

impl CmdEntry for squeue::Entry {
    type Cmd = [u8; 16];
    fn uring_cmd(fd: RawFd, op: u32, cmd: [u8; 16]) -> Self {
        opcode::UringCmd16::new(types::Fd(fd), op).cmd(cmd).build()
    }
}

impl CmdEntry for squeue::Entry128 {
    type Cmd = [u8; 80];
    fn uring_cmd(fd: RawFd, op: u32, cmd: [u8; 80]) -> Self {
        opcode::UringCmd80::new(types::Fd(fd), op).cmd(cmd).build()
    }
}

/// An SQE that may be pushed: nothing it names for the kernel can go away
/// while the kernel may use it. Making one is where that is checked.
#[derive(Clone, Debug)]
pub struct Sqe<S>(S);

impl<S: CmdEntry> Sqe<S> {
    /// A `URING_CMD` on `fd`.
    ///
    /// # Safety
    /// Memory the command names for the kernel (an `addr` in `cmd`) must
    /// stay valid until its completion, or for good if the ring may be
    /// dropped before it.
    pub unsafe fn uring_cmd(fd: RawFd, op: u32, cmd: S::Cmd) -> Self {
        Self(S::uring_cmd(fd, op, cmd))
    }

    /// An `IORING_OP_NOP`.
    pub fn nop() -> Self {
        Self(opcode::Nop::new().build().into())
    }

    /// # Safety
    /// As for [`Sqe::uring_cmd`]: what `sqe` names outlives its use.
    pub unsafe fn from_raw(sqe: S) -> Self {
        Self(sqe)
    }

    pub fn user_data(mut self, user_data: u64) -> Self {
        self.0.set_user_data(user_data);
        self
    }
}

impl Sqe<squeue::Entry128> {
    /// A command on an app's device file: the driver's commands there
    /// carry their payload inline (a job's descriptor) and name no memory
    /// of ours, so nothing has to outlive the submission.
    pub fn device_cmd(dev: &Device, op: u32, payload: [u8; 80]) -> Self {
        Self(squeue::Entry128::uring_cmd(dev.as_raw_fd(), op, payload))
    }
}

/// An io_uring of `URING_CMD`s (or NOPs) on a device file.
pub struct CmdRing<S: squeue::EntryMarker = squeue::Entry128> {
    ring: IoUring<S, cqueue::Entry>,
}

impl<S: squeue::EntryMarker> CmdRing<S> {
    pub fn new(ring: IoUring<S, cqueue::Entry>) -> Self {
        Self { ring }
    }

    /// Queues `sqe`; `false` if the submission queue is full.
    pub fn push(&mut self, sqe: &Sqe<S>) -> bool {
        // SAFETY: an `Sqe`'s maker vouched for what it names.
        unsafe { self.ring.submission().push(&sqe.0) }.is_ok()
    }

    /// SQEs queued and not yet submitted.
    pub fn queued(&mut self) -> usize {
        self.ring.submission().len()
    }

    pub fn cq_entries(&self) -> u32 {
        self.ring.params().cq_entries()
    }

    /// Has the kernel signal `eventfd` at every completion.
    pub fn register_eventfd(&self, eventfd: RawFd) -> io::Result<()> {
        self.ring.submitter().register_eventfd(eventfd)
    }

    /// `io_uring_enter`: submits what is queued and waits for `want`
    /// completions, for at most `timeout`. A signal, the timeout, or a
    /// kernel that takes nothing for now (`EBUSY`, `EAGAIN`: the SQEs stay
    /// queued) end it without error: the caller's loop decides what next.
    /// Only a bare submission (no wait) is retried after a signal.
    pub fn enter(&self, want: usize, timeout: Option<Duration>) -> io::Result<()> {
        loop {
            let r = match timeout {
                None => self.ring.submit_and_wait(want),
                Some(t) => {
                    let ts = types::Timespec::from(t);
                    self.ring.submitter().submit_with_args(want, &types::SubmitArgs::new().timespec(&ts))
                }
            };
            match r {
                Err(e) if e.raw_os_error() == Some(libc::EINTR) && want == 0 && timeout.is_none() => continue,
                Err(e) if !matches!(e.raw_os_error(), Some(libc::EINTR | libc::ETIME | libc::EBUSY | libc::EAGAIN)) => {
                    return Err(e)
                }
                _ => return Ok(()),
            }
        }
    }

    /// The completions at hand.
    pub fn reap(&mut self) -> impl Iterator<Item = Completion> + '_ {
        self.ring.completion().map(|c| Completion { user_data: c.user_data(), res: c.result() })
    }
}

impl<S: squeue::EntryMarker> AsRawFd for CmdRing<S> {
    fn as_raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}

/// The ring's eventfd, watched by tokio's reactor.
#[cfg(feature = "tokio")]
pub(crate) fn watch_eventfd(
    efd: nix::sys::eventfd::EventFd,
) -> io::Result<tokio::io::unix::AsyncFd<nix::sys::eventfd::EventFd>> {
    // SAFETY: the EventFd owns its fd, which stays open and the same for
    // as long as the AsyncFd holds it.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(efd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}
