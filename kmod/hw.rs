// SPDX-License-Identifier: GPL-2.0

//! `/dev/m4npu-hw`: the port of the device that executes jobs (the virtual
//! NPU daemon; a real NPU's firmware interface would sit at the same spot).
//!
//! One session at a time. The device maps NPU memory (device address `a` at
//! file offset `a`; the foundation model read-only) and takes jobs with
//! ublk-style uring commands: FETCH makes a slot ready, the driver answers
//! it with a job descriptor written to the device's memory, and
//! COMMIT_AND_FETCH returns the result and makes the slot ready again.
//!
//! A session ends when its opener closes the file (`->flush` from the
//! opener's file table, which a killed process's exit runs at once) or the
//! file's last reference goes, whichever is first: the ring of a killed
//! device holds the file until io_uring's exit work runs, and a restarted
//! device must not wait for that. Whatever the device held or had yet to
//! take then fails with `EIO`, or with recovery on waits for the next
//! device (see `dispatch`).
//!
//! This file opens the device, maps NPU memory and decodes the device's
//! commands; a slot's whole life (queues, delivery, abort, commit) is
//! `dispatch`'s.

use core::{mem::size_of, ptr::NonNull};

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
        mm::{Vma, VmOps},
        task::FlOwner,
        uring_cmd::{IoUringCmd, IssueFlags, EIOCBQUEUED},
    },
    dispatch::{slot_index, FetchPdu},
    npu::Npu,
    pool::Pool,
    uapi,
};

/// The open device file.
pub(crate) struct HwSession {
    pub(crate) npu: Arc<Npu>,
    /// The dispatcher's name for this session.
    pub(crate) id: u64,
    /// The opener's file table: its close ends the session.
    owner: FlOwner,
}

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

    fn issue(&self, cmd: &IoUringCmd<HwSession>, flags: IssueFlags) -> Result<i32> {
        let commit = match cmd.cmd_op() {
            uapi::URING_CMD_HW_FETCH => false,
            uapi::URING_CMD_HW_COMMIT_AND_FETCH => true,
            uapi::URING_CMD_HW_FETCH_BATCH | uapi::URING_CMD_HW_COMMIT_BATCH => return self.issue_batch(cmd, flags),
            _ => return Err(crate::errno::eopnotsupp()),
        };
        let c: uapi::HwCmd = cmd.read_payload(flags)?;
        let slot = slot_index(c.queue, c.tag)?;
        if !commit && c.result != 0 {
            return Err(EINVAL);
        }
        cmd.set_pdu(FetchPdu { slot: slot as u32, batch: 0, addr: c.addr });
        let queued = cmd.mark_cancelable(flags);
        self.npu.dispatcher().fetch(self.id, slot, commit.then_some(c.result), queued, flags);
        Ok(-EIOCBQUEUED)
    }

    /// FETCH_BATCH (queued until jobs come) or COMMIT_BATCH (done at once).
    fn issue_batch(&self, cmd: &IoUringCmd<HwSession>, flags: IssueFlags) -> Result<i32> {
        let c: uapi::HwBatchCmd = cmd.read_payload(flags)?;
        if c.queue >= uapi::HW_MAX_QUEUES || c.count == 0 || c.count > uapi::HW_QUEUE_DEPTH || c.pad != 0 {
            return Err(EINVAL);
        }
        let queue = usize::from(c.queue);
        if cmd.cmd_op() == uapi::URING_CMD_HW_COMMIT_BATCH {
            let n = usize::from(c.count);
            let mut results = KVec::with_capacity(n, GFP_KERNEL)?;
            let mut reader = UserSlice::new(c.addr as usize, n * size_of::<uapi::HwBatchResult>()).reader();
            for _ in 0..n {
                results.push(reader.read::<uapi::HwBatchResult>()?, GFP_KERNEL)?;
            }
            let done = self.npu.dispatcher().commit_batch(self.id, queue, &results)?;
            return Ok(done as i32);
        }
        cmd.set_pdu(FetchPdu { slot: u32::from(c.queue), batch: u32::from(c.count), addr: c.addr });
        let queued = cmd.mark_cancelable(flags);
        self.npu.dispatcher().fetch_batch(self.id, queue, queued, flags);
        Ok(-EIOCBQUEUED)
    }
}

/// A page of the device's mapping touched again after `madvise(MADV_DONTNEED)`
/// dropped it: the same NPU memory faults back in, as for BOs (the file
/// offset is the device address).
impl VmOps for Pool {
    fn fault(pool: ArcBorrow<'_, Pool>, pgoff: usize) -> Option<NonNull<bindings::page>> {
        pool.mem().get_page(pgoff.checked_mul(PAGE_SIZE)?)
    }
}

#[vtable]
impl MiscDevice for HwSession {
    type Ptr = Arc<HwSession>;
    type RegistrationData = Arc<Npu>;

    fn open(_file: &File, misc: &MiscDeviceRegistration<Self>) -> Result<Arc<HwSession>> {
        let npu = misc.data().clone();
        let id = npu.dispatcher().attach()?;
        let session = Arc::new(HwSession { npu: npu.clone(), id, owner: FlOwner::current() }, GFP_KERNEL)
            .inspect_err(|_| npu.dispatcher().detach(id))?;
        pr_info!("device attached\n");
        Ok(session)
    }

    fn flush(session: ArcBorrow<'_, HwSession>, _file: &File, owner: FlOwner) {
        // Not a forked child's copy of the descriptor: only its opener's.
        if owner == session.owner {
            session.npu.dispatcher().detach(session.id);
        }
    }

    fn release(session: Arc<HwSession>, _file: &File) {
        session.npu.dispatcher().detach(session.id);
        pr_info!("device detached\n");
    }

    fn ioctl(session: ArcBorrow<'_, HwSession>, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        crate::ioctl::check(cmd, &[uapi::IOC_HW_GET_INFO, uapi::IOC_HW_SET_FLAGS])?;
        match cmd {
            uapi::IOC_HW_GET_INFO => crate::ioctl::write(arg, &session.info())?,
            _ => {
                let req: uapi::HwSetFlags = crate::ioctl::read(arg)?;
                session.npu.dispatcher().set_flags(session.id, req.flags)?;
            }
        }
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
        pool.mem().remap(vma, start)?;
        vma.set_ops(pool.clone());
        Ok(())
    }

    fn uring_cmd(session: ArcBorrow<'_, HwSession>, cmd: &IoUringCmd<HwSession>, flags: IssueFlags) -> Result<i32> {
        if flags.cancel() {
            let pdu = cmd.pdu::<FetchPdu>();
            match pdu.batch {
                0 => session.npu.dispatcher().cancel_fetch(session.id, pdu.slot as usize, cmd, flags),
                _ => session.npu.dispatcher().cancel_batch(session.id, pdu.slot as usize, cmd, flags),
            }
            return Ok(0);
        }
        session.issue(cmd, flags)
    }
}
