// SPDX-License-Identifier: GPL-2.0

//! Per-open contexts: everything an app owns lives here and dies with its
//! file (or, for mapped BOs, with its last mapping).
//!
//! Locking: `tables` guards the handle tables. It nests inside mmap_lock
//! (the mmap handler takes it), so it is never held while touching user
//! memory or reading a file, and no object is dropped under it (dropping
//! the last reference to NPU memory zeroes it).

use kernel::{
    bindings, new_mutex,
    page::{PAGE_SHIFT, PAGE_SIZE},
    prelude::*,
    sync::{Arc, ArcBorrow, Mutex},
};

use crate::{
    adapter::{self, Adapter},
    bo::{Bo, Usage},
    compat::{
        file::File,
        miscdevice::{MiscDevice, MiscDeviceRegistration},
        mm::Vma,
        seq_file::{seq_print, SeqFile},
    },
    handles::HandleTable,
    npu::Npu,
    uapi, DRIVER_VERSION,
};

/// A context's objects, by handle.
struct Tables {
    bos: HandleTable<Bo>,
    adapters: HandleTable<Adapter>,
}

/// mmap offsets: `handle << BO_OFFSET_SHIFT` (so a BO may be up to 4 GiB).
const BO_OFFSET_SHIFT: u32 = 32;

/// One open of `/dev/m4npu`.
#[pin_data]
pub(crate) struct Context {
    id: u64,
    /// Thread group of the opener, for fdinfo and debugging.
    pid: i32,
    npu: Arc<Npu>,
    usage: Arc<Usage>,
    #[pin]
    tables: Mutex<Tables>,
}

/// The caller's thread-group id. Not `current!().group_leader().pid()`:
/// 6.12's `Task` claims `task_struct`'s 64-byte alignment, which slab-
/// allocated tasks need not have, and debug assertions catch the deref.
fn current_tgid() -> i32 {
    // SAFETY: `get_current()` is the running task, valid for this call; a
    // null namespace means the caller's own.
    unsafe { bindings::__task_pid_nr_ns(bindings::get_current(), bindings::pid_type_PIDTYPE_TGID, core::ptr::null_mut()) }
}

fn copy_str(dst: &mut [u8], src: &[u8]) {
    // Leave room for the terminating NUL.
    let n = src.len().min(dst.len() - 1);
    dst[..n].copy_from_slice(&src[..n]);
}

impl Context {
    /// What GET_INFO reports to this context.
    pub(crate) fn info(&self) -> uapi::Info {
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

    pub(crate) fn bo_create(&self, req: &mut uapi::BoCreate) -> Result {
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
        let bo = Bo::new(&self.npu, &self.usage, size)?;
        let handle = self.tables.lock().bos.insert(bo)?;
        req.handle = handle;
        req.mmap_offset = u64::from(handle) << BO_OFFSET_SHIFT;
        Ok(())
    }

    /// Undoes a create whose result could not be returned to userspace.
    pub(crate) fn bo_forget(&self, handle: u32) {
        let bo = self.tables.lock().bos.remove(handle);
        drop(bo);
    }

    pub(crate) fn bo_destroy(&self, req: &uapi::BoDestroy) -> Result {
        if req.pad != 0 {
            return Err(EINVAL);
        }
        let bo = self.tables.lock().bos.remove(req.handle).ok_or(ENOENT)?;
        drop(bo);
        Ok(())
    }

    pub(crate) fn adapter_load(&self, req: &mut uapi::AdapterLoad) -> Result {
        let adapter = adapter::load(&self.npu, &self.usage, req)?;
        req.handle = self.tables.lock().adapters.insert(adapter)?;
        Ok(())
    }

    /// Undoes a load whose result could not be returned to userspace.
    pub(crate) fn adapter_forget(&self, handle: u32) {
        let a = self.tables.lock().adapters.remove(handle);
        drop(a);
    }

    pub(crate) fn adapter_unload(&self, req: &uapi::AdapterUnload) -> Result {
        if req.pad != 0 {
            return Err(EINVAL);
        }
        let a = self.tables.lock().adapters.remove(req.handle).ok_or(ENOENT)?;
        drop(a);
        Ok(())
    }
}

#[vtable]
impl MiscDevice for Context {
    type Ptr = Arc<Context>;
    type RegistrationData = Arc<Npu>;

    fn open(_file: &File, misc: &MiscDeviceRegistration<Self>) -> Result<Arc<Context>> {
        let npu = misc.data().clone();
        let usage = Arc::new(Usage::new(npu.ctx_quota()), GFP_KERNEL)?;
        let id = npu.new_context_id();
        let pid = current_tgid();
        npu.register_context(id, pid, usage.clone())?;
        let ctx = Arc::pin_init(
            try_pin_init!(Context {
                id,
                pid,
                npu,
                usage,
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
        crate::ioctl::dispatch(&ctx, cmd, arg)
    }

    fn mmap(ctx: ArcBorrow<'_, Context>, _file: &File, vma: &Vma) -> Result {
        // Private mappings would let writes go to copies the NPU never sees.
        if vma.flags() & bindings::VM_SHARED as usize == 0 {
            return Err(EINVAL);
        }
        let pages_per_handle = 1usize << (BO_OFFSET_SHIFT - PAGE_SHIFT as u32);
        let handle = u32::try_from(vma.pgoff() / pages_per_handle).map_err(|_| EINVAL)?;
        let start = (vma.pgoff() % pages_per_handle) * PAGE_SIZE;
        // Unknown offsets, including other contexts' BOs, look like no BO at all.
        let bo = ctx.tables.lock().bos.get(handle).ok_or(EINVAL)?;
        bo.mmap(vma, start)
    }

    fn show_fdinfo(ctx: ArcBorrow<'_, Context>, m: &SeqFile, _file: &File) {
        // Keys follow Documentation/gpu/drm-usage-stats.rst.
        seq_print!(m, "drm-driver:\tm4npu\n");
        seq_print!(m, "drm-client-id:\t{}\n", ctx.id);
        seq_print!(m, "drm-memory-npu:\t{} KiB\n", ctx.usage.bytes() / 1024);
        seq_print!(m, "drm-engine-npu:\t0 ns\n");
        seq_print!(m, "m4npu-pid:\t{}\n", ctx.pid);
        let (bos, adapters) = {
            let t = ctx.tables.lock();
            (t.bos.len(), t.adapters.len())
        };
        seq_print!(m, "m4npu-bos:\t{}\n", bos);
        seq_print!(m, "m4npu-adapters:\t{}\n", adapters);
        seq_print!(m, "m4npu-quota:\t{} KiB\n", ctx.usage.quota() / 1024);
    }
}
