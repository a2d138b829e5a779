// SPDX-License-Identifier: GPL-2.0

//! `/dev/m4npu-hw`: the port of the device that executes jobs (the virtual
//! NPU daemon; a real NPU's firmware interface would sit at the same spot).
//!
//! One session at a time. The device maps NPU memory (device address `a` at
//! file offset `a`; the foundation model read-only) and takes jobs with
//! ublk-style uring commands: FETCH makes a slot ready, the driver answers
//! it with a job descriptor written to the device's memory, and
//! COMMIT_AND_FETCH returns the result and makes the slot ready again. When
//! the session ends, whatever the device held or had yet to take fails
//! with `EIO`.

use core::mem::size_of;

use kernel::{
    bindings,
    page::PAGE_SIZE,
    prelude::*,
    sync::{Arc, ArcBorrow},
    uaccess::UserSlice,
};

use crate::{
    compat::{
        file::File,
        miscdevice::{MiscDevice, MiscDeviceRegistration},
        mm::Vma,
        uring_cmd::{self, IoUringCmd, IssueFlags, Pdu, RawIoUringCmd, EIOCBQUEUED},
    },
    dispatch::slot_index,
    npu::Npu,
    uapi,
};

/// The open device file.
pub(crate) struct HwSession {
    npu: Arc<Npu>,
}

/// pdu of a FETCH / COMMIT_AND_FETCH: its slot and where its descriptor goes.
#[derive(Clone, Copy)]
struct FetchPdu {
    slot: u32,
    addr: u64,
}

// SAFETY: 16 bytes of integers, alignment 8.
unsafe impl Pdu for FetchPdu {}

impl HwSession {
    fn info(&self) -> uapi::HwInfo {
        let mut info = uapi::HwInfo {
            uapi_version: uapi::UAPI_VERSION,
            pool_size: self.npu.pool().size() as u64,
            max_queues: uapi::HW_MAX_QUEUES,
            queue_depth: uapi::HW_QUEUE_DEPTH,
            ..Default::default()
        };
        if let Some(m) = self.npu.model() {
            info.flags |= uapi::INFO_MODEL_LOADED;
            info.model_size = m.size as u64;
            info.model_region = m.region() as u64;
        }
        info
    }

    fn issue(&self, cmd: &IoUringCmd, flags: IssueFlags) -> Result<i32> {
        let commit = match cmd.cmd_op() {
            uapi::URING_CMD_HW_FETCH => false,
            uapi::URING_CMD_HW_COMMIT_AND_FETCH => true,
            _ => return Err(crate::errno::eopnotsupp()),
        };
        let c: uapi::HwCmd = cmd.read_payload(flags)?;
        let slot = slot_index(c.queue, c.tag)?;
        if !commit && c.result != 0 {
            return Err(EINVAL);
        }
        cmd.set_pdu(FetchPdu { slot: slot as u32, addr: c.addr });
        let queued = cmd.mark_cancelable(flags);
        self.npu.jobs().fetch(slot, commit.then_some(c.result), queued, flags);
        Ok(-EIOCBQUEUED)
    }
}

/// Task work in the device's task: write the slot's job descriptor to the
/// device's memory and complete its FETCH.
///
/// # Safety
///
/// Called by io_uring only, for a FETCH handed to it by the dispatcher.
pub(crate) unsafe extern "C" fn deliver(cmd: *mut RawIoUringCmd, flags: u32) {
    // SAFETY: io_uring calls us with the arguments of a task-work callback
    // queued by the dispatcher for a FETCH on a device file.
    let (cmd, flags) = unsafe { uring_cmd::task_work_callback(cmd, flags) };
    // SAFETY: commands on the device file carry an `Arc<HwSession>` in
    // `private_data` (our misc device), kept open by io_uring.
    let session = unsafe { uring_cmd::file_data::<Arc<HwSession>>(cmd.cmd()) };
    let jobs = session.npu.jobs();
    let pdu = cmd.cmd().pdu::<FetchPdu>();
    let slot = pdu.slot as usize;
    if flags.task_dead() {
        // The device is exiting and its memory is gone: the job fails now.
        jobs.abort(slot, -(bindings::EIO as isize));
        return cmd.done(-(bindings::ECANCELED as isize), flags);
    }
    let Some(job) = jobs.start(slot) else {
        return cmd.done(-(bindings::EIO as isize), flags);
    };
    let written = UserSlice::new(pdu.addr as usize, size_of::<uapi::HwJob>()).writer().write(&job);
    match written {
        Ok(()) => cmd.done(0, flags),
        Err(e) => {
            jobs.abort(slot, -(bindings::EIO as isize));
            cmd.done(e.to_errno() as isize, flags);
        }
    }
}

/// Task work for a FETCH that outlived its session (cannot happen: a queued
/// command holds the file open); completes it as cancelled.
///
/// # Safety
///
/// Called by io_uring only, for a command handed to it by the dispatcher.
pub(crate) unsafe extern "C" fn abort_fetch(cmd: *mut RawIoUringCmd, flags: u32) {
    // SAFETY: as in `deliver`.
    let (cmd, flags) = unsafe { uring_cmd::task_work_callback(cmd, flags) };
    cmd.done(-(bindings::ECANCELED as isize), flags);
}

#[vtable]
impl MiscDevice for HwSession {
    type Ptr = Arc<HwSession>;
    type RegistrationData = Arc<Npu>;

    fn open(_file: &File, misc: &MiscDeviceRegistration<Self>) -> Result<Arc<HwSession>> {
        let npu = misc.data().clone();
        let session = Arc::new(HwSession { npu: npu.clone() }, GFP_KERNEL)?;
        npu.jobs().attach()?;
        pr_info!("device attached\n");
        Ok(session)
    }

    fn release(session: Arc<HwSession>, _file: &File) {
        session.npu.jobs().detach();
        pr_info!("device detached\n");
    }

    fn ioctl(session: ArcBorrow<'_, HwSession>, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        crate::ioctl::check(cmd, &[uapi::IOC_HW_GET_INFO])?;
        crate::ioctl::write(arg, &session.info())?;
        Ok(0)
    }

    fn mmap(session: ArcBorrow<'_, HwSession>, _file: &File, vma: &Vma) -> Result {
        if vma.flags() & bindings::VM_SHARED as usize == 0 {
            return Err(EINVAL);
        }
        let pool = session.npu.pool();
        let start = vma.pgoff().checked_mul(PAGE_SIZE).ok_or(EINVAL)?;
        let end = start.checked_add(vma.len()).ok_or(EINVAL)?;
        if end > pool.size() {
            return Err(EINVAL);
        }
        // The foundation model is read-only for everyone, the device too.
        let region = session.npu.model().map_or(0, |m| m.region());
        if start < region {
            if vma.flags() & bindings::VM_WRITE as usize != 0 {
                return Err(EACCES);
            }
            vma.clear_flags(bindings::VM_MAYWRITE as usize);
        }
        pool.mem().remap(vma, start)
    }

    fn uring_cmd(session: ArcBorrow<'_, HwSession>, cmd: &IoUringCmd, flags: IssueFlags) -> Result<i32> {
        if flags.cancel() {
            let slot = cmd.pdu::<FetchPdu>().slot as usize;
            session.npu.jobs().cancel_fetch(slot, cmd, flags);
            return Ok(0);
        }
        session.issue(cmd, flags)
    }
}
