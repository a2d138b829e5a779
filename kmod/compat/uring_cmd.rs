// SPDX-License-Identifier: GPL-2.0

//! `IORING_OP_URING_CMD` commands, after the `kernel::io_uring` abstraction
//! proposed upstream (`IoUringCmd`, `IssueFlags`). 6.12's bindings lack
//! `include/linux/io_uring/cmd.h`, so `struct io_uring_cmd` and the exported
//! functions are declared here by hand.
//!
//! A command that its handler queued (returned [`EIOCBQUEUED`]) becomes a
//! [`QueuedCmd`]: an owned token that must be completed exactly once, by
//! [`QueuedCmd::done`] in io_uring's context or [`QueuedCmd::complete_in_task`]
//! from anywhere. io_uring keeps the command, its file and its ring alive
//! until then.

use core::{marker::PhantomData, ptr::NonNull};

use kernel::{
    bindings,
    ffi::{c_uint, c_void},
    prelude::*,
    types::{AsBytes, ForeignOwnable, FromBytes},
};

use super::{file::File, miscdevice::MiscDevice};

/// `struct io_uring_cmd` of `include/linux/io_uring/cmd.h` (6.12). `file`
/// is a `struct file *`, typed void so that the lint for FFI-safe types does
/// not wander into `struct file`'s members.
#[repr(C)]
pub(crate) struct RawIoUringCmd {
    file: *mut c_void,
    sqe: *const u8,
    task_work_cb: Option<unsafe extern "C" fn(*mut RawIoUringCmd, c_uint)>,
    cmd_op: u32,
    flags: u32,
    pdu: [u64; 4],
}

// As helpers.c asserts of the C struct.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(offset_of!(RawIoUringCmd, file) == 0 && offset_of!(RawIoUringCmd, sqe) == 8);
    assert!(offset_of!(RawIoUringCmd, task_work_cb) == 16 && offset_of!(RawIoUringCmd, cmd_op) == 24);
    assert!(offset_of!(RawIoUringCmd, flags) == 28 && offset_of!(RawIoUringCmd, pdu) == 32);
    assert!(size_of::<RawIoUringCmd>() == 64);
};

extern "C" {
    fn io_uring_cmd_done(cmd: *mut RawIoUringCmd, ret: isize, res2: u64, issue_flags: c_uint);
    fn __io_uring_cmd_do_in_task(
        cmd: *mut RawIoUringCmd,
        cb: unsafe extern "C" fn(*mut RawIoUringCmd, c_uint),
        flags: c_uint,
    );
    fn io_uring_cmd_mark_cancelable(cmd: *mut RawIoUringCmd, issue_flags: c_uint);
}

/// Offset of the command area in `struct io_uring_sqe` (`sqe->cmd`); this
/// and the flags and errno below are asserted in helpers.c.
const SQE_CMD_OFFSET: usize = 48;
/// Bytes of the command area in a 64-byte SQE; 128-byte SQEs add 64.
const SQE_CMD_BYTES: usize = 16;
const SQE128_CMD_BYTES: usize = SQE_CMD_BYTES + 64;

/// "Queued, will complete later": what a handler returns for an async command.
pub(crate) const EIOCBQUEUED: i32 = 529;

/// `enum io_uring_cmd_flags` of `include/linux/io_uring_types.h` (6.12):
/// what io_uring tells a handler about the call. Pass it back unchanged.
#[derive(Clone, Copy)]
pub(crate) struct IssueFlags(u32);

impl IssueFlags {
    const SQE128: u32 = 1 << 8;
    const CANCEL: u32 = 1 << 11;
    const TASK_DEAD: u32 = 1 << 13;

    pub(crate) fn from_raw(v: u32) -> Self {
        Self(v)
    }

    /// The ring's SQEs are 128 bytes.
    pub(crate) fn sqe128(self) -> bool {
        self.0 & Self::SQE128 != 0
    }

    /// io_uring asks us to cancel a command marked cancelable.
    pub(crate) fn cancel(self) -> bool {
        self.0 & Self::CANCEL != 0
    }

    /// Task work runs because the ring's task is exiting: no user memory.
    pub(crate) fn task_dead(self) -> bool {
        self.0 & Self::TASK_DEAD != 0
    }
}

/// A command on a file of misc device `D`, as a handler sees it, for the
/// duration of the call.
#[repr(transparent)]
pub(crate) struct IoUringCmd<D: MiscDevice>(kernel::types::Opaque<RawIoUringCmd>, PhantomData<D>);

impl<D: MiscDevice> IoUringCmd<D> {
    /// # Safety
    ///
    /// `ptr` is a command on a file opened by misc device `D` that io_uring
    /// passed to `->uring_cmd()` or to a task-work callback, valid and not
    /// completed for `'a`, and not accessed by anyone else meanwhile except
    /// through `QueuedCmd`s of the same command.
    pub(crate) unsafe fn from_raw<'a>(ptr: *mut RawIoUringCmd) -> &'a IoUringCmd<D> {
        // SAFETY: `repr(transparent)`; validity is the caller's promise.
        unsafe { &*ptr.cast() }
    }

    /// The driver data of the file the command was issued on.
    pub(crate) fn data(&self) -> <D::Ptr as ForeignOwnable>::Borrowed<'_> {
        // SAFETY: the file is `D`'s (type invariant), whose `private_data`
        // holds a `D::Ptr` from `into_foreign()` until release, and io_uring
        // holds the file open for the command's lifetime.
        unsafe { D::Ptr::borrow((*self.file().as_ptr()).private_data.cast_const().cast::<c_void>()) }
    }

    fn as_ptr(&self) -> *mut RawIoUringCmd {
        self.0.get()
    }

    /// The SQE's `cmd_op`.
    pub(crate) fn cmd_op(&self) -> u32 {
        // SAFETY: valid command (type invariant); set at prep, never changed.
        unsafe { (*self.as_ptr()).cmd_op }
    }

    /// The file the command was issued on.
    pub(crate) fn file(&self) -> &File {
        // SAFETY: io_uring holds a reference to the file until completion.
        unsafe { File::from_raw_file((*self.as_ptr()).file.cast::<bindings::file>()) }
    }

    /// Copies the payload `T` out of the SQE's command area. `EINVAL` if
    /// `T` does not fit the ring's SQE size. Only valid during issue (the
    /// SQE is not kept after it), which is what `&self` of a handler is.
    pub(crate) fn read_payload<T: FromBytes>(&self, flags: IssueFlags) -> Result<T> {
        let room = if flags.sqe128() { SQE128_CMD_BYTES } else { SQE_CMD_BYTES };
        if core::mem::size_of::<T>() > room {
            return Err(EINVAL);
        }
        // SAFETY: during issue `sqe` points at a whole SQE of the ring's size
        // (in the shared SQ ring, or io_uring's async copy); the read is
        // volatile because userspace may scribble on a shared SQE, and `T:
        // FromBytes` accepts whatever bytes it finds.
        Ok(unsafe { core::ptr::read_volatile((*self.as_ptr()).sqe.add(SQE_CMD_OFFSET).cast::<T>()) })
    }

    /// Reads the driver's per-command data (upstream: `read_pdu`).
    pub(crate) fn pdu<T: FromBytes>(&self) -> T {
        let () = PduFits::<T>::OK;
        // SAFETY: valid command; the 32 bytes are initialised (zeroed at
        // issue, see `clear_pdu`), 8-aligned and hold a `T` (`PduFits`), and
        // any bytes are a valid `T` (`FromBytes`).
        unsafe { core::ptr::addr_of!((*self.as_ptr()).pdu).cast::<T>().read() }
    }

    /// Sets the driver's per-command data (upstream: `write_pdu`).
    pub(crate) fn set_pdu<T: AsBytes>(&self, v: T) {
        let () = PduFits::<T>::OK;
        // SAFETY: as in `pdu`; the area is the driver's, and while a handler
        // or the owner of its `QueuedCmd` runs nobody else touches it.
        unsafe { core::ptr::addr_of_mut!((*self.as_ptr()).pdu).cast::<T>().write(v) }
    }

    /// Zeroes the per-command data when io_uring first hands the command
    /// over, so that `pdu` never reads bytes nobody wrote.
    pub(crate) fn clear_pdu(&self) {
        self.set_pdu([0u64; 4]);
    }

    /// Lets io_uring cancel the command when its ring or task goes away: the
    /// handler is then called again with [`IssueFlags::cancel`]. Call before
    /// the command becomes reachable by anyone who might complete it, and
    /// only for a command that will be queued.
    pub(crate) fn mark_cancelable(&self, flags: IssueFlags) -> QueuedCmd<D> {
        // SAFETY: valid command in its issue call, with the flags io_uring
        // gave (io_uring takes its lock if they say we do not hold it).
        unsafe { io_uring_cmd_mark_cancelable(self.as_ptr(), flags.0) };
        QueuedCmd(NonNull::from(&self.0).cast(), PhantomData)
    }

    /// Whether `q` is this command.
    pub(crate) fn is(&self, q: &QueuedCmd<D>) -> bool {
        q.0.as_ptr() == self.as_ptr()
    }
}

/// Build-time check that `T` fits the 32 bytes, 8-aligned, of `pdu`.
struct PduFits<T>(PhantomData<T>);

impl<T> PduFits<T> {
    const OK: () = assert!(core::mem::size_of::<T>() <= 32 && core::mem::align_of::<T>() <= 8);
}

/// A queued command on a file of misc device `D`; completing it consumes
/// it.
pub(crate) struct QueuedCmd<D: MiscDevice>(NonNull<RawIoUringCmd>, PhantomData<D>);

// SAFETY: a queued command may be completed from any task: `done` is only
// called with flags io_uring gave the caller, and `complete_in_task` moves the
// completion to the command's own task.
unsafe impl<D: MiscDevice> Send for QueuedCmd<D> {}

/// Work for the task that owns a queued command's ring (io_uring's task
/// work): it receives the command, now its own, and must complete it.
pub(crate) trait TaskWork<D: MiscDevice> {
    fn run(cmd: QueuedCmd<D>, flags: IssueFlags);
}

impl<D: MiscDevice> QueuedCmd<D> {
    /// Posts `res` as the CQE. `flags` are those io_uring gave the caller
    /// (an issue, cancel or task-work call of this command's ring).
    pub(crate) fn done(self, res: isize, flags: IssueFlags) {
        // SAFETY: queued and not yet completed (type invariant: consumed here).
        unsafe { io_uring_cmd_done(self.0.as_ptr(), res, 0, flags.0) };
    }

    /// Runs `W` in the task that owns the command's ring, which then
    /// completes it.
    pub(crate) fn complete_in_task<W: TaskWork<D>>(self) {
        // SAFETY: queued and not yet completed; `run_task_work::<D, W>`
        // takes the command over.
        unsafe { __io_uring_cmd_do_in_task(self.0.as_ptr(), run_task_work::<D, W>, 0) };
    }

    /// The command, to read or set its pdu before completion.
    pub(crate) fn cmd(&self) -> &IoUringCmd<D> {
        // SAFETY: queued commands stay valid until completed, and the owner
        // of the token is the only one to touch its pdu; the file is `D`'s
        // (type invariant).
        unsafe { IoUringCmd::from_raw(self.0.as_ptr()) }
    }
}

/// The callback of [`QueuedCmd::complete_in_task`].
///
/// # Safety
///
/// Called by io_uring only, with the command queued there for `W`.
unsafe extern "C" fn run_task_work<D: MiscDevice, W: TaskWork<D>>(cmd: *mut RawIoUringCmd, flags: c_uint) {
    // SAFETY: io_uring never passes a null command; this call owns it now,
    // a command of `D`'s file as queued.
    let cmd = QueuedCmd(unsafe { NonNull::new_unchecked(cmd) }, PhantomData);
    W::run(cmd, IssueFlags(flags));
}
