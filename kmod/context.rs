// SPDX-License-Identifier: GPL-2.0

//! Per-open contexts: everything an app owns lives here and dies with its
//! file (or, for mapped BOs, with its last mapping).
//!
//! Locking: `tables` guards the handle tables. It nests inside mmap_lock
//! (the mmap handler takes it) and io_uring's ring lock (RUN resolves
//! handles), so it is never held while touching user memory, reading a
//! file or taking the dispatcher's lock, and no object is dropped under it
//! (dropping the last reference to NPU memory zeroes it).

use kernel::{
    bindings, new_mutex,
    page::PAGE_SIZE,
    prelude::*,
    sync::{Arc, ArcBorrow, Mutex},
    uaccess::UserSlice,
};

use crate::{
    adapter::{self, Adapter},
    bo::{self, Bo, BO_OFFSET_SHIFT},
    compat::{
        file::File,
        miscdevice::{MiscDevice, MiscDeviceRegistration},
        mm::Vma,
        seq_file::{seq_print, SeqFile},
        task::{capable, current_tgid, CAP_SYS_NICE},
        uring_cmd::{IoUringCmd, IssueFlags, EIOCBQUEUED},
    },
    dispatch::Canceled,
    handles::HandleTable,
    ioctl,
    job::{self, Job, JobStats, Notify, Resolved, RunPdu, SyncWait},
    npu::Npu,
    uapi, DRIVER_VERSION,
    usage::Usage,
};

/// A context's objects, by handle.
struct Tables {
    bos: HandleTable<Bo>,
    adapters: HandleTable<Adapter>,
}

/// One open of `/dev/m4npu`.
#[pin_data]
pub(crate) struct Context {
    id: u64,
    /// Thread group of the opener, for fdinfo and debugging.
    pid: i32,
    npu: Arc<Npu>,
    usage: Arc<Usage>,
    jobs: Arc<JobStats>,
    #[pin]
    tables: Mutex<Tables>,
}

fn copy_str(dst: &mut [u8], src: &[u8]) {
    // Leave room for the terminating NUL.
    let n = src.len().min(dst.len() - 1);
    dst[..n].copy_from_slice(&src[..n]);
}

impl Context {
    /// What GET_INFO reports to this context.
    fn info(&self) -> uapi::Info {
        let mut info = uapi::Info::zeroed();
        info.uapi_version = uapi::UAPI_VERSION;
        info.context_id = self.id;
        copy_str(&mut info.driver_version, DRIVER_VERSION.as_bytes());
        let pool = self.npu.pool();
        info.pool_size = pool.size() as u64;
        info.pool_used = pool.used() as u64;
        if let Some(m) = self.npu.model() {
            info.flags |= uapi::INFO_MODEL_LOADED;
            info.model_size = m.size as u64;
            info.model_name = m.name;
            info.model_hash = m.hash;
        }
        info
    }

    fn bo_create(&self, req: &mut uapi::BoCreate) -> Result {
        if req.flags != 0 || req.size == 0 {
            return Err(EINVAL);
        }
        let size = usize::try_from(req.size).map_err(|_| crate::errno::edquot())?;
        let size = size.checked_next_multiple_of(PAGE_SIZE).ok_or_else(crate::errno::edquot)?;
        // Past the quota is the more useful answer than past the BO limit.
        if size > self.usage.quota() {
            return Err(crate::errno::edquot());
        }
        if size > 1 << BO_OFFSET_SHIFT {
            return Err(EINVAL);
        }
        let bo = Arc::new(Bo::new(self.npu.pool(), &self.usage, size)?, GFP_KERNEL)?;
        let handle = self.tables.lock().bos.insert(bo)?;
        req.handle = handle;
        req.mmap_offset = u64::from(handle) << BO_OFFSET_SHIFT;
        Ok(())
    }

    /// Undoes a create whose result could not be returned to userspace.
    fn bo_forget(&self, handle: u32) {
        let bo = self.tables.lock().bos.remove(handle);
        drop(bo);
    }

    fn bo_destroy(&self, req: &uapi::BoDestroy) -> Result {
        if req.pad != 0 {
            return Err(EINVAL);
        }
        let bo = self.tables.lock().bos.remove(req.handle).ok_or(ENOENT)?;
        drop(bo);
        Ok(())
    }

    fn adapter_load(&self, req: &mut uapi::AdapterLoad) -> Result {
        let adapter = adapter::load(self.npu.pool(), self.npu.model(), &self.usage, req)?;
        req.handle = self.tables.lock().adapters.insert(adapter)?;
        Ok(())
    }

    /// Undoes a load whose result could not be returned to userspace.
    fn adapter_forget(&self, handle: u32) {
        let a = self.tables.lock().adapters.remove(handle);
        drop(a);
    }

    fn adapter_unload(&self, req: &uapi::AdapterUnload) -> Result {
        if req.pad != 0 {
            return Err(EINVAL);
        }
        let a = self.tables.lock().adapters.remove(req.handle).ok_or(ENOENT)?;
        drop(a);
        Ok(())
    }

    /// An ioctl on the context's file: arguments copied in whole before
    /// use, results copied out after every lock is dropped.
    fn ioctl(&self, cmd: u32, arg: usize) -> Result<isize> {
        ioctl::check(
            cmd,
            &[
                uapi::IOC_GET_INFO,
                uapi::IOC_BO_CREATE,
                uapi::IOC_BO_DESTROY,
                uapi::IOC_ADAPTER_LOAD,
                uapi::IOC_ADAPTER_UNLOAD,
                uapi::IOC_RUN,
                uapi::IOC_MODEL_META,
            ],
        )?;
        match cmd {
            uapi::IOC_GET_INFO => ioctl::write(arg, &self.info())?,
            uapi::IOC_BO_CREATE => {
                let mut req: uapi::BoCreate = ioctl::read(arg)?;
                self.bo_create(&mut req)?;
                if let Err(e) = ioctl::write(arg, &req) {
                    self.bo_forget(req.handle);
                    return Err(e);
                }
            }
            uapi::IOC_BO_DESTROY => self.bo_destroy(&ioctl::read(arg)?)?,
            uapi::IOC_ADAPTER_LOAD => {
                let mut req: uapi::AdapterLoad = ioctl::read(arg)?;
                self.adapter_load(&mut req)?;
                if let Err(e) = ioctl::write(arg, &req) {
                    self.adapter_forget(req.handle);
                    return Err(e);
                }
            }
            uapi::IOC_ADAPTER_UNLOAD => self.adapter_unload(&ioctl::read(arg)?)?,
            uapi::IOC_RUN => return self.run_sync(&ioctl::read(arg)?),
            uapi::IOC_MODEL_META => {
                let mut req: uapi::ModelMeta = ioctl::read(arg)?;
                self.model_meta(&mut req)?;
                ioctl::write(arg, &req)?;
            }
            _ => return Err(ENOTTY),
        }
        Ok(0)
    }

    /// MODEL_META: copies the firmware's metadata out if it fits.
    fn model_meta(&self, req: &mut uapi::ModelMeta) -> Result {
        let fw = self.npu.firmware().ok_or(ENODEV)?;
        let meta = fw.meta();
        let fits = req.size >= meta.len() as u64;
        req.size = meta.len() as u64;
        if fits {
            UserSlice::new(req.addr as usize, meta.len()).writer().write_slice(meta)?;
        }
        Ok(())
    }

    /// The objects `d` names, from this context's tables only.
    fn resolve(&self, d: &uapi::Job) -> Result<Resolved> {
        let t = self.tables.lock();
        let bo = |h: u32| t.bos.get(h).ok_or(ENOENT);
        let found = (|| {
            Ok(Resolved {
                adapter: if d.adapter == 0 { None } else { Some(t.adapters.get(d.adapter).ok_or(ENOENT)?) },
                input: bo(d.input.handle)?,
                output: bo(d.output.handle)?,
                state: if d.state.handle == 0 { None } else { Some(bo(d.state.handle)?) },
            })
        })();
        drop(t);
        found
    }

    /// A job for descriptor `d`, checked against this context and admitted:
    /// the caller sets its notify before anything else can fail.
    /// The descriptor's own errors come first (`EOPNOTSUPP`, `EINVAL`,
    /// `EPERM` for high priority without `CAP_SYS_NICE`, `ENODEV`, `ENOENT`,
    /// `EINVAL` for ranges), then the state of things (`ENXIO` without a
    /// device, `EBUSY` at the in-flight limit).
    fn prepare(&self, d: &uapi::Job) -> Result<KBox<Job>> {
        job::check_descriptor(d)?;
        // As for realtime priorities: jumping ahead of every other app is a
        // privilege. Checked per job, against the submitter's credentials.
        if d.priority == uapi::JOB_PRIO_HIGH && !capable(CAP_SYS_NICE) {
            return Err(EPERM);
        }
        if self.npu.model().is_none() {
            return Err(ENODEV);
        }
        let objs = self.resolve(d)?;
        let job = Job::new(self.npu.dispatcher().next_id(), self.id, d, objs, &self.jobs)?;
        if !self.npu.dispatcher().serving() {
            return Err(ENXIO);
        }
        job.admit()?;
        Ok(job)
    }

    /// Synchronous RUN: returns the output bytes.
    fn run_sync(&self, d: &uapi::Job) -> Result<isize> {
        // Allocated first: an admitted job must get its notify before
        // anything else can fail, or its in-flight slot is never given back.
        let wait = SyncWait::new()?;
        let mut job = self.prepare(d)?;
        job.set_notify(Notify::Sync(wait.clone()));
        let key = match self.npu.dispatcher().submit(job) {
            Ok(key) => key,
            Err((mut job, e)) => {
                job.complete(e.to_errno() as isize, None);
                return Err(e);
            }
        };
        let res = match wait.wait_killable() {
            Some(res) => res,
            // Killed: nobody will read the result.
            None => match self.npu.dispatcher().cancel(|| key) {
                Canceled::Removed(mut job) => {
                    job.complete(-(bindings::EINTR as isize), None);
                    return Err(EINTR);
                }
                Canceled::Detached(_) => return Err(EINTR),
                // The result is being delivered as we speak.
                Canceled::NotFound => wait.wait(),
            },
        };
        if res < 0 {
            return Err(Error::from_errno(res as i32));
        }
        Ok(res)
    }

    /// RUN over io_uring: queue the job, or refuse it at once.
    fn run_uring(&self, cmd: &IoUringCmd<Context>, flags: IssueFlags) -> Result<i32> {
        if cmd.cmd_op() != uapi::URING_CMD_RUN {
            return Err(crate::errno::eopnotsupp());
        }
        // The descriptor does not fit a 64-byte SQE.
        if !flags.sqe128() {
            return Err(EINVAL);
        }
        let d: uapi::Job = cmd.read_payload(flags)?;
        let mut job = self.prepare(&d)?;
        cmd.set_pdu(RunPdu::new(job.id));
        // From here on the command completes through the job, exactly once.
        job.set_notify(Notify::Uring(cmd.mark_cancelable(flags)));
        if let Err((mut job, e)) = self.npu.dispatcher().submit(job) {
            job.complete(e.to_errno() as isize, Some(flags));
        }
        Ok(-EIOCBQUEUED)
    }

    /// io_uring cancels a RUN (its ring or task is going away).
    fn cancel_uring(&self, cmd: &IoUringCmd<Context>, flags: IssueFlags) {
        let ecanceled = -(bindings::ECANCELED as isize);
        match self.npu.dispatcher().cancel(|| cmd.pdu::<RunPdu>().key) {
            Canceled::Removed(mut job) => job.complete(ecanceled, Some(flags)),
            Canceled::Detached(Some(notify)) => notify.cancel(Some(flags)),
            Canceled::Detached(None) | Canceled::NotFound => {}
        }
    }
}

#[vtable]
impl MiscDevice for Context {
    type Ptr = Arc<Context>;
    type RegistrationData = Arc<Npu>;

    fn open(_file: &File, misc: &MiscDeviceRegistration<Self>) -> Result<Arc<Context>> {
        let npu = misc.data().clone();
        let usage = Arc::new(Usage::new(npu.ctx_quota()), GFP_KERNEL)?;
        let jobs = Arc::new(JobStats::new(npu.ctx_max_jobs()), GFP_KERNEL)?;
        let id = npu.new_context_id();
        let pid = current_tgid();
        npu.register_context(id, pid, usage.clone(), jobs.clone())?;
        let ctx = Arc::pin_init(
            try_pin_init!(Context {
                id,
                pid,
                npu,
                usage,
                jobs,
                tables <- new_mutex!(
                    Tables { bos: HandleTable::new(), adapters: HandleTable::new() },
                    "m4npu_ctx_tables"
                ),
            }),
            GFP_KERNEL,
        );
        if ctx.is_err() {
            misc.data().unregister_context(id);
        }
        ctx
    }

    fn release(ctx: Arc<Context>, _file: &File) {
        ctx.npu.unregister_context(ctx.id);
    }

    fn ioctl(ctx: ArcBorrow<'_, Context>, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        ctx.ioctl(cmd, arg)
    }

    fn mmap(ctx: ArcBorrow<'_, Context>, _file: &File, vma: &Vma) -> Result {
        // Private mappings would let writes go to copies the NPU never sees.
        if vma.flags() & bindings::VM_SHARED as usize == 0 {
            return Err(EINVAL);
        }
        let handle = bo::handle_of(vma.pgoff()).ok_or(EINVAL)?;
        let start = bo::page_in_bo(vma.pgoff()) * PAGE_SIZE;
        // Unknown offsets, including other contexts' BOs, look like no BO at all.
        let bo = ctx.tables.lock().bos.get(handle).ok_or(EINVAL)?;
        bo.mmap(vma, start)
    }

    fn uring_cmd(ctx: ArcBorrow<'_, Context>, cmd: &IoUringCmd<Context>, flags: IssueFlags) -> Result<i32> {
        if flags.cancel() {
            ctx.cancel_uring(cmd, flags);
            return Ok(0);
        }
        ctx.run_uring(cmd, flags)
    }

    fn show_fdinfo(ctx: ArcBorrow<'_, Context>, m: &SeqFile, _file: &File) {
        // Keys follow Documentation/gpu/drm-usage-stats.rst.
        seq_print!(m, "drm-driver:\tm4npu\n");
        seq_print!(m, "drm-client-id:\t{}\n", ctx.id);
        seq_print!(m, "drm-memory-npu:\t{} KiB\n", ctx.usage.bytes() / 1024);
        seq_print!(m, "drm-engine-npu:\t{} ns\n", ctx.jobs.busy_ns());
        seq_print!(m, "m4npu-pid:\t{}\n", ctx.pid);
        let (bos, adapters) = {
            let t = ctx.tables.lock();
            (t.bos.len(), t.adapters.len())
        };
        seq_print!(m, "m4npu-bos:\t{}\n", bos);
        seq_print!(m, "m4npu-adapters:\t{}\n", adapters);
        seq_print!(m, "m4npu-quota:\t{} KiB\n", ctx.usage.quota() / 1024);
        seq_print!(m, "m4npu-jobs-submitted:\t{}\n", ctx.jobs.submitted());
        seq_print!(m, "m4npu-jobs-completed:\t{}\n", ctx.jobs.completed());
        seq_print!(m, "m4npu-jobs-failed:\t{}\n", ctx.jobs.failed());
        seq_print!(m, "m4npu-jobs-inflight:\t{}\n", ctx.jobs.inflight());
        seq_print!(m, "m4npu-jobs-queued:\t{}\n", ctx.jobs.queued());
        seq_print!(m, "m4npu-queue-delay:\t{} ns\n", ctx.jobs.queue_delay_ns());
    }
}
