// SPDX-License-Identifier: GPL-2.0

//! Adapters: an app's fine-tuned part of the model (LoRA, task head, input
//! projection), read from a sealed memfd into the context's NPU memory.
//!
//! The seals make the memfd immutable while we read it; the copy in NPU
//! memory is what gets validated and what the device uses, and apps can
//! neither map nor change it.

use core::ptr::NonNull;

use kernel::{
    bindings,
    ffi::{c_int, c_void},
    page::PAGE_SIZE,
    prelude::*,
    sync::Arc,
};

use crate::{
    blob::{check_sections, named, read, sha256_of, Refusal},
    bo::{Bo, Usage},
    errno,
    npu::Npu,
    uapi,
};

// kmod/helpers.c; `file` is a `struct file *`, typed void so that the lint
// for FFI-safe types does not wander into `struct file`'s members.
extern "C" {
    fn m4npu_helper_memfd_seals(file: *mut c_void) -> c_int;
    fn m4npu_helper_file_size(file: *mut c_void) -> bindings::loff_t;
}

const REQUIRED_SEALS: c_int = (bindings::F_SEAL_WRITE | bindings::F_SEAL_SHRINK | bindings::F_SEAL_GROW) as c_int;

/// A loaded adapter. Its memory stays while any reference (handle table,
/// a job in flight) holds it.
pub(crate) struct Adapter {
    mem: Arc<Bo>,
    size: usize,
}

impl Adapter {
    /// Bytes of the blob.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    pub(crate) fn mem(&self) -> &Arc<Bo> {
        &self.mem
    }
}

/// A file reference from `fget()`, put on drop.
struct FileRef(NonNull<bindings::file>);

impl FileRef {
    fn get(fd: i32) -> Result<Self> {
        let fd = u32::try_from(fd).map_err(|_| EBADF)?;
        // SAFETY: fget() takes any fd number and returns NULL if it is not open.
        NonNull::new(unsafe { bindings::fget(fd) }).map(Self).ok_or(EBADF)
    }

    fn as_ptr(&self) -> *mut bindings::file {
        self.0.as_ptr()
    }
}

impl Drop for FileRef {
    fn drop(&mut self) {
        // SAFETY: the reference taken by fget(), put once.
        unsafe { bindings::fput(self.0.as_ptr()) };
    }
}

/// Loads the adapter `req` describes. Errors as documented in the UAPI.
pub(crate) fn load(npu: &Arc<Npu>, usage: &Arc<Usage>, req: &uapi::AdapterLoad) -> Result<Arc<Adapter>> {
    if req.flags != 0 || req.pad != 0 {
        return Err(EINVAL);
    }
    let file = FileRef::get(req.fd)?;
    // SAFETY: `file` holds a reference for the call.
    let seals = unsafe { m4npu_helper_memfd_seals(file.as_ptr().cast()) };
    if seals < 0 {
        return Err(errno::eopnotsupp());
    }
    if seals & REQUIRED_SEALS != REQUIRED_SEALS {
        return Err(EPERM);
    }
    // SAFETY: as above.
    let file_size = unsafe { m4npu_helper_file_size(file.as_ptr().cast()) } as u64;
    let end = req.offset.checked_add(req.length).ok_or(EINVAL)?;
    if req.length == 0 || end > file_size {
        return Err(EINVAL);
    }
    let len = usize::try_from(req.length).map_err(|_| EFBIG)?;
    if len > usage.quota() {
        return Err(EFBIG);
    }
    let model = npu.model().ok_or(ENODEV)?;
    let mem = Bo::new(npu, usage, len.div_ceil(PAGE_SIZE) * PAGE_SIZE)?;

    // SAFETY: a fresh BO that no app can map (it has no handle in the BO
    // table), so only we write it.
    let dst = unsafe { mem.kernel_ptr() };
    let mut pos = req.offset as bindings::loff_t;
    let mut done = 0;
    while done < len {
        // SAFETY: `dst + done .. dst + len` lies inside the BO; `pos` is ours.
        let n = unsafe { bindings::kernel_read(file.as_ptr(), dst.add(done).cast(), len - done, &mut pos) };
        if n < 0 {
            return Err(Error::from_errno(n as i32));
        }
        if n == 0 {
            // Sealed against shrinking, so this cannot happen; do not spin.
            return Err(EIO);
        }
        done += n as usize;
    }
    // SAFETY: `len` bytes were just written; nobody else writes them.
    let blob = unsafe { core::slice::from_raw_parts(dst, len) };
    validate(blob, &model.hash)?;
    Ok(Arc::new(Adapter { mem, size: len }, GFP_KERNEL)?)
}

/// The same checks as userspace's `m4npu_format::Adapter::parse`, then the
/// binding to the pinned foundation model.
fn validate(blob: &[u8], model_hash: &[u8; 32]) -> Result {
    let h: uapi::AdapterHeader = read(blob, 0).ok_or(ENOEXEC)?;
    if h.magic != uapi::ADAPTER_MAGIC
        || h.format_version != uapi::ADAPTER_FORMAT_VERSION
        || h.header_size as usize != core::mem::size_of::<uapi::AdapterHeader>()
        || h.reserved != [0; 32]
        || h.total_size != blob.len() as u64
        || !named(&h.name)
    {
        return Err(ENOEXEC);
    }
    let sections = h.sections();
    check_sections(blob, &sections).map_err(|r| match r {
        Refusal::Malformed(_) => ENOEXEC,
        Refusal::NoMemory => ENOMEM,
    })?;
    if sha256_of(&blob[h.header_size as usize..])? != h.content_hash {
        return Err(errno::ebadmsg());
    }
    if &h.base_model_hash != model_hash {
        return Err(errno::emediumtype());
    }
    Ok(())
}
